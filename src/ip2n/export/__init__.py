"""Writers for what people look at and use: images, grids, depth maps, videos, meshes."""
