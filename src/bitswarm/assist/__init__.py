"""An assistant in a block-building game: a human builds a goal only they can see, an assistant learns to help."""
