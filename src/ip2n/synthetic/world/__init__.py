"""The synthetic world at run time: the procedural heads, their attributes and latent layout, the
instruction grammar and the mark on rendered heads. The built-in model and the pipeline use it."""
