"""The ``rnnzoo`` commands, one module per family: inspecting the registry and
configs (:mod:`.inspect`), training and using trained runs (:mod:`.run`), and the
gradient-flow comparison (:mod:`.gradflow`)."""
