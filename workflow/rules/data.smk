# Data preparation: every dataset is generated from a seed or fetched with a pinned checksum.


rule generate_sequences:
    output:
        train="data/sequences/train.npz",
        test="data/sequences/test.npz",
        probes="data/sequences/probes.npz",
    params:
        config=sequence_config("data"),
    log:
        "logs/generate_sequences.log",
    benchmark:
        "logs/benchmarks/generate_sequences.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule data:
    """Every dataset of the enabled experiments (the target of the DVC `data` stage)."""
    input:
        data_targets(),
    localrule: True
    default_target: False
