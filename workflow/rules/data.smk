# Data preparation: every dataset is generated from a seed or fetched with a pinned checksum.


rule generate_sequences:
    output:
        train="data/sequences/train.npz",
        test="data/sequences/test.npz",
        probes="data/sequences/probes.npz",
    params:
        code=code_version("sequence"),
        config=sequence_config("data"),
    log:
        "logs/generate_sequences.log",
    benchmark:
        "logs/benchmarks/generate_sequences.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule fetch_images:
    """Raw image files from the configured sources, each checked against its pinned SHA-256."""
    output:
        raw=directory("data/raw/images"),
    params:
        code=code_version("images"),
        config=images_config("data"),
    log:
        "logs/fetch_images.log",
    benchmark:
        "logs/benchmarks/fetch_images.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule prepare_images:
    """In-distribution train/test split and the out-of-distribution sets, as arrays."""
    input:
        raw=rules.fetch_images.output.raw,
    output:
        train="data/prepared/images/train.npz",
        test="data/prepared/images/test.npz",
        ood="data/prepared/images/ood.npz",
    params:
        code=code_version("images"),
        config=images_config("data"),
    log:
        "logs/prepare_images.log",
    benchmark:
        "logs/benchmarks/prepare_images.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule gather_corpora:
    """Text corpora (training and held out) from Debian packages or BabyLM, with origin and licence."""
    output:
        raw=directory("data/raw/language"),
    params:
        code=code_version("language"),
        config=language_config("data"),
        downloads="downloads/language",  # the BabyLM archive, outside DVC's data/
    log:
        "logs/gather_corpora.log",
    benchmark:
        "logs/benchmarks/gather_corpora.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule prepare_corpora:
    """A character vocabulary from the training corpora; train/validation/test blocks of each corpus."""
    input:
        raw=rules.gather_corpora.output.raw,
    output:
        corpora="data/prepared/language/corpora.npz",
        vocab="data/prepared/language/vocab.json",
    params:
        code=code_version("language"),
        config=language_config("data"),
    log:
        "logs/prepare_corpora.log",
    benchmark:
        "logs/benchmarks/prepare_corpora.tsv"
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
