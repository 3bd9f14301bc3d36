"""What comes in: loading MODEL (`model`), input specs and sample inputs (`inputs`), the PyTorch reference
(`reference`), the model's interface as ports (`ports`) and the size limit checked right after loading (`limits`)."""
