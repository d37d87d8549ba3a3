"""The template: a new model repository from a table (``make new-model``), and its updates."""
