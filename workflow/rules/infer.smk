# GBI inference (one-step, iterative, exhaustive) and recomposition of novel tasks, weights frozen.


rule infer_sequence:
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        table=f"{SEQUENCE_RUNS}/inference.parquet",
        metrics=f"{SEQUENCE_RUNS}/inference.json",
    params:
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
        config=sequence_config("recomposition"),
    log:
        "logs/recompose_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
