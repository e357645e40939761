"""A ComfyUI custom-node pack in the classic style, unchanged (it imports nothing from ComfyUI)."""


class StringRepeat:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"default": "ab", "multiline": True}),
                "times": ("INT", {"default": 2, "min": 1, "max": 10}),
                "mode": (["plain", "upper"],),
            },
            "optional": {"suffix": ("STRING", {"default": ""})},
        }

    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("text", "length")
    FUNCTION = "repeat"
    CATEGORY = "text"

    def repeat(self, text, times, mode, suffix=""):
        out = text * times + suffix
        if mode == "upper":
            out = out.upper()
        return (out, len(out))


class SaveText:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True}),
                             "filename_prefix": ("STRING", {"default": "text"})},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "text"

    def save(self, text, filename_prefix, unique_id=None, prompt=None):
        return {"ui": {"text": [text], "node": [unique_id], "prompt_nodes": [sorted(prompt)]}}


class RandomPick:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choices": ("STRING", {"default": "a,b,c"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "pick"
    CATEGORY = "text"

    @classmethod
    def IS_CHANGED(cls, choices):
        return float("nan")

    def pick(self, choices):
        import random

        return (random.choice(choices.split(",")),)


NODE_CLASS_MAPPINGS = {"StringRepeat": StringRepeat, "SaveText": SaveText, "RandomPick": RandomPick}
NODE_DISPLAY_NAME_MAPPINGS = {"StringRepeat": "Repeat a string"}
