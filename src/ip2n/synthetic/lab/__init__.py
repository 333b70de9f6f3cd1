"""The synthetic world's lab: the head bank, training and evaluating the world's networks, and the
one-command reproduction of the built-in model (`ip2n synth train-all`)."""
