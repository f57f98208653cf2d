"""The toy world: procedural one-object scenes, their captions, and the bundled prior trained on them."""
