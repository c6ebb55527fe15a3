# Evaluation of trained models: forgetting, shared units, learning speed.


rule evaluate_sequence:
    input:
        model=rules.train_sequence.output.model,
        train=rules.generate_sequences.output.train,
        probes=rules.generate_sequences.output.probes,
    output:
        metrics=f"{SEQUENCE_RUNS}/evaluation.json",
    params:
        code=code_version("sequence"),
        config=sequence_config("evaluation"),
    log:
        "logs/evaluate_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule sequence_geometry:
    """Parallelism Score, CCGP and shattering of a sequence model's hidden state (task x observation)."""
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        metrics=f"{SEQUENCE_RUNS}/geometry.json",
    params:
        code=code_version("geometry_sequence"),
        config=geometry_config("sequence_null_draws", "sequence_null_decoding_draws"),
    threads: 1
    log:
        "logs/sequence_geometry/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/sequence_geometry/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule language_geometry:
    """Parallelism Score, CCGP and shattering of a language model's hidden state across corpora."""
    input:
        model=rules.train_language.output.model,
        corpora=rules.prepare_corpora.output.corpora,
        vocab=rules.prepare_corpora.output.vocab,
    output:
        metrics=f"{LANGUAGE_RUNS}/geometry.json",
    params:
        code=code_version("language"),
        config=language_config("geometry"),
    threads: 1
    log:
        "logs/language_geometry/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/language_geometry/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
