# GBI toy sequences: generate -> train GBI-LSTM and LSTM -> GBI inference and recomposition ->
# forgetting and shared units -> tables and figures across seeds.


rule generate_sequences:
    output:
        train="data/sequences/train.npz",
        test="data/sequences/test.npz",
        probes="data/sequences/probes.npz",
    params:
        code=stage_code("generate_sequences"),
        config=sequence_config("data"),
    log:
        "logs/generate_sequences.log",
    benchmark:
        "logs/benchmarks/generate_sequences.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule train_sequence:
    input:
        train=rules.generate_sequences.output.train,
    output:
        model=f"{SEQUENCE_RUNS}/model.pt",
        curve=f"{SEQUENCE_RUNS}/learning_curve.csv",
    params:
        code=stage_code("train_sequence"),
        config=sequence_config("data", "model", "train"),
        checkpoint="checkpoints/sequence/{model}/seed{seed}.pt",
    wildcard_constraints:
        model="|".join(config["sequence"]["models"]),
        seed=r"\d+",
    resources:
        gpu=lambda wc: int(config["device"] in ("auto", "cuda")),
    log:
        "logs/train_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule infer_sequence:
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        table=f"{SEQUENCE_RUNS}/inference.parquet",
        metrics=f"{SEQUENCE_RUNS}/inference.json",
    params:
        code=stage_code("infer_sequence"),
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
        code=stage_code("recompose_sequence"),
        config=sequence_config("recomposition"),
    log:
        "logs/recompose_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule evaluate_sequence:
    input:
        model=rules.train_sequence.output.model,
        train=rules.generate_sequences.output.train,
        probes=rules.generate_sequences.output.probes,
    output:
        metrics=f"{SEQUENCE_RUNS}/evaluation.json",
    params:
        code=stage_code("evaluate_sequence"),
        config=sequence_config("evaluation"),
    log:
        "logs/evaluate_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule tabulate_sequence:
    input:
        inference=sequence_results(f"{SEQUENCE_RUNS}/inference.json"),
        evaluation=sequence_results(f"{SEQUENCE_RUNS}/evaluation.json"),
        recomposition=sequence_results(f"{SEQUENCE_RUNS}/recomposition.csv"),
        curves=sequence_results(f"{SEQUENCE_RUNS}/learning_curve.csv"),
        switch=sequence_results(f"{SEQUENCE_RUNS}/inference.parquet", models=["gbi_lstm"]),
    output:
        summary=table("sequence_summary", "sequence"),
        recomposition=table("sequence_recomposition", "sequence"),
        curves="results/tables/sequence_learning_curves.csv",
        switch="results/tables/sequence_switch_accuracy.csv",
    localrule: True
    params:
        code=stage_code("tabulate_sequence"),
    log:
        "logs/tabulate_sequence.log",
    benchmark:
        "logs/benchmarks/tabulate_sequence.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule plot_sequence:
    input:
        summary=rules.tabulate_sequence.output.summary,
        recomposition=rules.tabulate_sequence.output.recomposition,
        curves=rules.tabulate_sequence.output.curves,
        switch=rules.tabulate_sequence.output.switch,
        inference=sequence_results(f"{SEQUENCE_RUNS}/inference.parquet", models=["gbi_lstm"]),
    output:
        curves=figure("sequence_learning_curves", "sequence"),
        switch=figure("sequence_switch_accuracy", "sequence"),
        gradient=figure("sequence_gradient_vs_posterior", "sequence"),
        recomposition=figure("sequence_recomposition", "sequence"),
        forgetting=figure("sequence_forgetting", "sequence"),
    localrule: True
    params:
        code=stage_code("plot_sequence"),
    log:
        "logs/plot_sequence.log",
    benchmark:
        "logs/benchmarks/plot_sequence.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
