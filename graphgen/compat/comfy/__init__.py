"""graphgen's stand-in for ComfyUI's `comfy` package (see `graphgen.compat`)."""
