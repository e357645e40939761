"""graphgen's stand-in for ComfyUI's `comfy_api` package (see `graphgen.compat`)."""
