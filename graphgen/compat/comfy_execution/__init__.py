"""graphgen's stand-in for ComfyUI's `comfy_execution` package (see `graphgen.compat`)."""
