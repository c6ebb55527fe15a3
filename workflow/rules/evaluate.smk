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
