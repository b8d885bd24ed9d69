"""What a run writes to disk: complete-or-absent checkpoints and resume choice (`checkpoints`), the buffered
generation batch a mid-cycle checkpoint carries (`generation_state`), the model card (`model_card`), and arguments
saved without secrets (`redaction`)."""
