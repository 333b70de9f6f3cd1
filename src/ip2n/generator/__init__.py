"""EG3D tri-plane generator networks (mapping, synthesis backbone, decoder, super-resolution)."""
