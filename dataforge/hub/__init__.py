"""`dataforge push`: a build, an adapter or an eval folder to the Hugging Face Hub, with a card."""
