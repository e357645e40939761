"""A ComfyUI custom-node pack that reads a file named by a workflow input, the way LoadImage-like
pack nodes do (`folder_paths.get_annotated_filepath`). graphgen's tests serve it to check that a
served workflow cannot read files outside the server's folders through it."""

import os

import folder_paths

import nodes


class PackReadText:
    """Read a text file of the input folder (or `name [output]`) and show it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "note.txt"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "read"
    OUTPUT_NODE = True
    CATEGORY = "test/files"

    def read(self, name):
        with open(folder_paths.get_annotated_filepath(name), encoding="utf-8") as handle:
            text = handle.read()
        return {"ui": {"text": [text]}, "result": (text,)}

    @classmethod
    def IS_CHANGED(cls, name):
        return os.path.getmtime(folder_paths.get_annotated_filepath(name)) \
            if folder_paths.exists_annotated_filepath(name) else ""


class PackLoadImage(nodes.LoadImage):
    """ComfyUI's LoadImage as packs extend it (its load_image, VALIDATE_INPUTS and IS_CHANGED)."""

    CATEGORY = "test/files"


NODE_CLASS_MAPPINGS = {"PackReadText": PackReadText, "PackLoadImage": PackLoadImage}
NODE_DISPLAY_NAME_MAPPINGS = {"PackReadText": "Read Text (test pack)", "PackLoadImage": "Load Image (test pack)"}
