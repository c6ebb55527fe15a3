# GBI language model: gather corpora -> vocabulary and block splits -> train character GBI-LSTM and LSTM ->
# corpus inference -> recomposition on a held-out corpus -> corpus geometry -> tables and figures.


rule gather_corpora:
    """Text corpora (training and held out) from Debian packages or BabyLM, with origin and licence."""
    output:
        raw=directory("data/raw/language"),
    log:
        "logs/gather_corpora.log",
    benchmark:
        "logs/benchmarks/gather_corpora.tsv"
    priority: LONG_JOBS_FIRST
    conda:
        CONDA_ENV
    params:
        code=stage_code("gather_corpora"),
        config=language_config("data"),
        downloads="downloads/language",  # the BabyLM archive, outside DVC's data/
    script:
        "../scripts/run_stage.py"


rule prepare_corpora:
    """A character vocabulary from the training corpora; train/validation/test blocks of each corpus."""
    input:
        raw=rules.gather_corpora.output.raw,
    output:
        corpora="data/prepared/language/corpora.npz",
        vocab="data/prepared/language/vocab.json",
    log:
        "logs/prepare_corpora.log",
    benchmark:
        "logs/benchmarks/prepare_corpora.tsv"
    priority: LONG_JOBS_FIRST
    conda:
        CONDA_ENV
    params:
        code=stage_code("prepare_corpora"),
        config=language_config("data"),
    script:
        "../scripts/run_stage.py"


rule train_language:
    """Character-level LSTM on the corpora: the GBI-LSTM sees the corpus as z, the LSTM does not."""
    input:
        corpora=rules.prepare_corpora.output.corpora,
        vocab=rules.prepare_corpora.output.vocab,
    output:
        model=f"{LANGUAGE_RUNS}/model.pt",
        curve=f"{LANGUAGE_RUNS}/learning_curve.csv",
    log:
        "logs/train_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_language/{model}_seed{seed}.tsv"
    wildcard_constraints:
        model="|".join(config["language"]["models"]),
        seed=r"\d+",
    priority: LONG_JOBS_FIRST
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=lambda wc: int(config["device"] in ("auto", "cuda")),
    params:
        code=stage_code("train_language"),
        config=language_config("model", "train", "evaluation"),
        checkpoint="checkpoints/language/{model}/seed{seed}.pt",
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
    log:
        "logs/infer_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_language/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("infer_language"),
        config=language_config("inference"),
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
    log:
        "logs/recompose_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_language/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("recompose_language"),
        config=language_config("recomposition"),
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
    log:
        "logs/language_geometry/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/language_geometry/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("language_geometry"),
        config=language_config("geometry"),
    script:
        "../scripts/run_stage.py"


rule tabulate_language:
    input:
        inference=language_results(f"{LANGUAGE_RUNS}/inference.json", models=["gbi_lstm"]),
        recomposition=language_results(f"{LANGUAGE_RUNS}/recomposition.csv"),
        geometry=language_results(f"{LANGUAGE_RUNS}/geometry.json"),
        curves=language_results(f"{LANGUAGE_RUNS}/learning_curve.csv"),
    output:
        inference=table("language_inference", "language"),
        recomposition=table("language_recomposition", "language"),
        geometry=table("language_geometry", "language"),
        curves="results/tables/language_learning_curves.csv",
    log:
        "logs/tabulate_language.log",
    benchmark:
        "logs/benchmarks/tabulate_language.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("tabulate_language"),
    script:
        "../scripts/run_stage.py"


rule plot_language:
    input:
        inference=rules.tabulate_language.output.inference,
        recomposition=rules.tabulate_language.output.recomposition,
        curves=rules.tabulate_language.output.curves,
        manifest=rules.gather_corpora.output.raw,
    output:
        inference=figure("language_inference", "language"),
        recomposition=figure("language_recomposition", "language"),
        corpora=table("language_corpora", "language"),
    log:
        "logs/plot_language.log",
    benchmark:
        "logs/benchmarks/plot_language.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("plot_language"),
    script:
        "../scripts/run_stage.py"
