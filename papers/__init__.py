"""One subpackage per replicated paper: ``papers.<slug>`` holds the paper's method, data generators and
metrics as plain, tested functions; ``papers/<slug>/<slug>.nb.py`` is the notebook that tells the story."""
