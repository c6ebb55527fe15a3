# GBI toy sequences: generate -> train GBI-LSTM and LSTM (and the controls: shuffled-z LSTM, gated
# GBI-LSTM) -> GBI inference and recomposition (GBI-LSTM and LSTM) -> forgetting and shared units
# (every model) -> tables and figures across seeds.

SEQUENCE_ALL_MODELS = config["sequence"]["models"] + config["sequence"]["controls"]


rule generate_sequences:
    output:
        train="data/sequences/train.npz",
        test="data/sequences/test.npz",
        probes="data/sequences/probes.npz",
    log:
        "logs/generate_sequences.log",
    benchmark:
        "logs/benchmarks/generate_sequences.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("generate_sequences"),
        config=sequence_config("data"),
    script:
        "../scripts/run_stage.py"


rule train_sequence:
    input:
        train=rules.generate_sequences.output.train,
    output:
        model=f"{SEQUENCE_RUNS}/model.pt",
        curve=f"{SEQUENCE_RUNS}/learning_curve.csv",
    log:
        "logs/train_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_sequence/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model="|".join(SEQUENCE_ALL_MODELS),
        seed=r"\d+",
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: int(config["device"] in ("auto", "cuda")),
    params:
        code=stage_code("train_sequence"),
        config=sequence_config("data", "model", "train"),
        checkpoint="checkpoints/sequence/{model}/seed{seed}.pt",
    script:
        "../scripts/run_stage.py"


rule infer_sequence:
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        table=f"{SEQUENCE_RUNS}/inference.parquet",
        metrics=f"{SEQUENCE_RUNS}/inference.json",
    log:
        "logs/infer_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("infer_sequence"),
        config=sequence_config("inference"),
    script:
        "../scripts/run_stage.py"


rule recompose_sequence:
    input:
        model=rules.train_sequence.output.model,
        probes=rules.generate_sequences.output.probes,
    output:
        table=f"{SEQUENCE_RUNS}/recomposition.csv",
    log:
        "logs/recompose_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("recompose_sequence"),
        config=sequence_config("recomposition"),
    script:
        "../scripts/run_stage.py"


rule evaluate_sequence:
    input:
        model=rules.train_sequence.output.model,
        train=rules.generate_sequences.output.train,
        probes=rules.generate_sequences.output.probes,
    output:
        metrics=f"{SEQUENCE_RUNS}/evaluation.json",
        forgetting=f"{SEQUENCE_RUNS}/forgetting.csv",
    log:
        "logs/evaluate_sequence/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_sequence/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("evaluate_sequence"),
        config=sequence_config("evaluation"),
    script:
        "../scripts/run_stage.py"


rule tabulate_sequence:
    input:
        inference=sequence_results(f"{SEQUENCE_RUNS}/inference.json"),
        evaluation=sequence_results(f"{SEQUENCE_RUNS}/evaluation.json"),
        forgetting=sequence_results(f"{SEQUENCE_RUNS}/forgetting.csv", models=SEQUENCE_ALL_MODELS),
        recomposition=sequence_results(f"{SEQUENCE_RUNS}/recomposition.csv"),
        curves=sequence_results(f"{SEQUENCE_RUNS}/learning_curve.csv", models=SEQUENCE_ALL_MODELS),
        switch=sequence_results(f"{SEQUENCE_RUNS}/inference.parquet", models=["gbi_lstm"]),
    output:
        summary=table("sequence_summary", "sequence"),
        recomposition=table("sequence_recomposition", "sequence"),
        forgetting=table("sequence_forgetting", "sequence"),
        curves="results/tables/sequence_learning_curves.csv",
        switch="results/tables/sequence_switch_accuracy.csv",
    log:
        "logs/tabulate_sequence.log",
    benchmark:
        "logs/benchmarks/tabulate_sequence.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("tabulate_sequence"),
    script:
        "../scripts/run_stage.py"


rule plot_sequence:
    input:
        summary=rules.tabulate_sequence.output.summary,
        recomposition=rules.tabulate_sequence.output.recomposition,
        curves=rules.tabulate_sequence.output.curves,
        switch=rules.tabulate_sequence.output.switch,
        forgetting_table=rules.tabulate_sequence.output.forgetting,
        inference=sequence_results(f"{SEQUENCE_RUNS}/inference.parquet", models=["gbi_lstm"]),
    output:
        curves=figure("sequence_learning_curves", "sequence"),
        switch=figure("sequence_switch_accuracy", "sequence"),
        gradient=figure("sequence_gradient_vs_posterior", "sequence"),
        recomposition=figure("sequence_recomposition", "sequence"),
        forgetting=figure("sequence_forgetting", "sequence"),
        context=figure("sequence_forgetting_context", "sequence"),
    log:
        "logs/plot_sequence.log",
    benchmark:
        "logs/benchmarks/plot_sequence.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("plot_sequence"),
    script:
        "../scripts/run_stage.py"
