"""What a run stores and reads back: checkpoints (``checkpoint``), the data side of a checkpoint
(``data_config``), model outputs decoded into predictions in original units (``prediction``) and the PNG
plots (``plots``)."""
