"""llava-ckd: bottom-up cascaded knowledge distillation for LLaVA-style VLMs.

The package's rooms, in layers: a module imports from its own room and from rooms of lower layers only
(tests/test_layers.py holds the code to that).

    layer 1  errors, files, storage, fingerprint, options  the user-error base, files read and written whole,
                                             fingerprints, a schema's options and their help
    layer 2  models, engines                 model sources, building, loading and shapes; multi-process placement
    layer 3  data                            LLaVA conversations, samples, collation, the synthetic benchmark
    layer 4  distill, eval                   distillation losses and Teacher signals; benchmarks and their scoring
    layer 5  config                          the typed stage configuration
    layer 6  train                           one stage as one Trainer run
    layer 7  cascade                         recipes: stages of every plan, run once each, resumable
    layer 8  plan, study                     cost before running; studies over paired seeds
    layer 9  demo                            the CPU demo
    layer 10 cli                             the `llava-ckd` command
"""

__version__ = "0.1.0"
