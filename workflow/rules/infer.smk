# GBI inference (one-step, iterative, exhaustive) and recomposition of novel tasks, weights frozen.


rule infer_sequence:
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        table=f"{SEQUENCE_RUNS}/inference.parquet",
        metrics=f"{SEQUENCE_RUNS}/inference.json",
    params:
        code=code_version("sequence"),
        config=sequence_config("inference"),
    log:
        "logs/infer_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule recompose_sequence:
    input:
        model=rules.train_sequence.output.model,
        probes=rules.generate_sequences.output.probes,
    output:
        table=f"{SEQUENCE_RUNS}/recomposition.csv",
    params:
        code=code_version("sequence"),
        config=sequence_config("recomposition"),
    log:
        "logs/recompose_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule infer_images:
    """Class inference (one-step, iterative, exhaustive GBI; classifier), OOD scores, calibration."""
    input:
        generative=rules.train_image_generative.output.model,
        classifier=rules.train_image_classifier.output.model,
        test=rules.prepare_images.output.test,
        ood=rules.prepare_images.output.ood,
    output:
        scores="results/images/seed{seed}/scores.parquet",
        metrics="results/images/seed{seed}/metrics.json",
    params:
        code=code_version("images"),
        config=images_config("inference"),
    threads: 1
    log:
        "logs/infer_images/seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_images/seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule recompose_images:
    """What iterative z finds on ambiguous inputs (pixel mixtures of two classes)."""
    input:
        generative=rules.train_image_generative.output.model,
        test=rules.prepare_images.output.test,
    output:
        table="results/images/seed{seed}/recomposition.csv",
    params:
        code=code_version("images"),
        config=images_config("recomposition"),
    threads: 1
    log:
        "logs/recompose_images/seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_images/seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule infer_language:
    """Which corpus a text window comes from: one-step, iterative and exhaustive GBI, per window length."""
    input:
        model=rules.train_language.output.model,
        corpora=rules.prepare_corpora.output.corpora,
        vocab=rules.prepare_corpora.output.vocab,
    output:
        table=f"{LANGUAGE_RUNS}/inference.parquet",
        metrics=f"{LANGUAGE_RUNS}/inference.json",
    params:
        code=code_version("language"),
        config=language_config("inference"),
    threads: 1
    log:
        "logs/infer_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_language/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule recompose_language:
    """Fit one z per corpus, weights frozen, on adaptation text; score it on unseen text of that corpus."""
    input:
        model=rules.train_language.output.model,
        corpora=rules.prepare_corpora.output.corpora,
        vocab=rules.prepare_corpora.output.vocab,
    output:
        table=f"{LANGUAGE_RUNS}/recomposition.csv",
    params:
        code=code_version("language"),
        config=language_config("recomposition"),
    threads: 1
    log:
        "logs/recompose_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_language/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
