# Model training: one job per (model, seed); checkpoints outside results/ so a re-run resumes.


rule train_sequence:
    input:
        train=rules.generate_sequences.output.train,
    output:
        model=f"{SEQUENCE_RUNS}/model.pt",
        curve=f"{SEQUENCE_RUNS}/learning_curve.csv",
    params:
        code=code_version("sequence"),
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


rule simulate_gdln:
    """Train a gated deep linear network and integrate its reduced dynamics (one experiment)."""
    output:
        rows="results/gdln/{experiment}/rows.parquet",
        arrays="results/gdln/{experiment}/arrays.npz",
        summary="results/gdln/{experiment}/summary.json",
    params:
        code=code_version("gdln"),
        config=lambda wc: config["gdln"],
    wildcard_constraints:
        experiment="xor|routing|race|zero_shot",
    threads: 1
    log:
        "logs/simulate_gdln/{experiment}.log",
    benchmark:
        "logs/benchmarks/simulate_gdln/{experiment}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule train_image_generative:
    """Class-conditioned generative network p(x | z), z = class one-hot."""
    input:
        train=rules.prepare_images.output.train,
    output:
        model="results/images/generative/seed{seed}/model.pt",
        curve="results/images/generative/seed{seed}/learning_curve.csv",
    params:
        code=code_version("images"),
        config=images_config("generative"),
        checkpoint="checkpoints/images/generative/seed{seed}.pt",
    threads: 1
    log:
        "logs/train_image_generative/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_image_generative/seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule train_image_classifier:
    """The canonical classifier of comparable size: the baseline."""
    input:
        train=rules.prepare_images.output.train,
    output:
        model="results/images/classifier/seed{seed}/model.pt",
        curve="results/images/classifier/seed{seed}/learning_curve.csv",
    params:
        code=code_version("images"),
        config=images_config("classifier"),
        checkpoint="checkpoints/images/classifier/seed{seed}.pt",
    threads: 1
    log:
        "logs/train_image_classifier/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_image_classifier/seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule sweep_geometry:
    """One cell of the abstraction sweep: MLPs on latent and random-hyperplane tasks, all seeds."""
    output:
        rows="results/geometry/sweep/d{d}/{activation}/depth{depth}/width{width}/wd{weight_decay}.parquet",
    params:
        code=code_version("geometry"),
        config=geometry_config("seeds", "random_tasks", "random_tasks_depths", "steps", "eval_steps", "network"),
    wildcard_constraints:
        activation="relu|tanh|gelu|leaky_relu|sigmoid",
        d=r"\d+",
        depth=r"\d+",
        width=r"\d+",
    threads: 1
    log:
        "logs/sweep_geometry/d{d}_{activation}_depth{depth}_width{width}_wd{weight_decay}.log",
    benchmark:
        "logs/benchmarks/sweep_geometry/d{d}_{activation}_depth{depth}_width{width}_wd{weight_decay}.tsv"
    conda:
        CONDA_ENV
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
    params:
        code=code_version("language"),
        config=language_config("model", "train", "evaluation"),
        checkpoint="checkpoints/language/{model}/seed{seed}.pt",
    wildcard_constraints:
        model="|".join(config["language"]["models"]),
        seed=r"\d+",
    resources:
        gpu=lambda wc: int(config["device"] in ("auto", "cuda")),
    threads: 1
    log:
        "logs/train_language/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_language/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
