# GBI image classifier: fetch (pinned SHA-256) -> prepare (train / validation / test) -> train the
# conditional generative net and the classifier, one model per input variant (per-image normalised,
# the headline; raw pixels, the extra row) in the same job -> inference, OOD, calibration, floors ->
# recomposition of mixtures -> tables and figures.


rule fetch_images:
    """Raw image files from the configured sources, each checked against its pinned SHA-256."""
    output:
        raw=directory("data/raw/images"),
    log:
        "logs/fetch_images.log",
    benchmark:
        "logs/benchmarks/fetch_images.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("fetch_images"),
        config=images_config("data"),
    script:
        "../scripts/run_stage.py"


rule prepare_images:
    """In-distribution train / validation / test splits and the out-of-distribution sets, as arrays."""
    input:
        raw=rules.fetch_images.output.raw,
    output:
        train="data/prepared/images/train.npz",
        validation="data/prepared/images/validation.npz",
        test="data/prepared/images/test.npz",
        ood="data/prepared/images/ood.npz",
    log:
        "logs/prepare_images.log",
    benchmark:
        "logs/benchmarks/prepare_images.tsv"
    conda:
        CONDA_ENV
    params:
        code=stage_code("prepare_images"),
        config=images_config("data"),
    script:
        "../scripts/run_stage.py"


rule train_image_generative:
    """Class-conditioned generative network p(x | z), z = class one-hot: raw and per-image inputs."""
    input:
        train=rules.prepare_images.output.train,
    output:
        model="results/images/generative/seed{seed}/model.pt",
        curve="results/images/generative/seed{seed}/learning_curve.csv",
        model_per_image="results/images/generative/seed{seed}/model_per_image.pt",
        curve_per_image="results/images/generative/seed{seed}/learning_curve_per_image.csv",
    log:
        "logs/train_image_generative/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_image_generative/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("train_image_generative"),
        config=images_config("generative"),
        checkpoint="checkpoints/images/generative/seed{seed}.pt",
    script:
        "../scripts/run_stage.py"


rule train_image_classifier:
    """The canonical classifier of comparable size: the baseline (raw and per-image inputs)."""
    input:
        train=rules.prepare_images.output.train,
    output:
        model="results/images/classifier/seed{seed}/model.pt",
        curve="results/images/classifier/seed{seed}/learning_curve.csv",
        model_per_image="results/images/classifier/seed{seed}/model_per_image.pt",
        curve_per_image="results/images/classifier/seed{seed}/learning_curve_per_image.csv",
    log:
        "logs/train_image_classifier/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train_image_classifier/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("train_image_classifier"),
        config=images_config("classifier"),
        checkpoint="checkpoints/images/classifier/seed{seed}.pt",
    script:
        "../scripts/run_stage.py"


rule infer_images:
    """Class inference (one-step, iterative, exhaustive GBI; classifier; linear floor), OOD scores and
    floors, calibration; temperatures on validation, the test split read once."""
    input:
        generative=rules.train_image_generative.output.model,
        classifier=rules.train_image_classifier.output.model,
        generative_per_image=rules.train_image_generative.output.model_per_image,
        classifier_per_image=rules.train_image_classifier.output.model_per_image,
        train=rules.prepare_images.output.train,
        validation=rules.prepare_images.output.validation,
        test=rules.prepare_images.output.test,
        ood=rules.prepare_images.output.ood,
    output:
        scores="results/images/seed{seed}/scores.parquet",
        metrics="results/images/seed{seed}/metrics.json",
    log:
        "logs/infer_images/seed{seed}.log",
    benchmark:
        "logs/benchmarks/infer_images/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("infer_images"),
        config=images_config("inference"),
    script:
        "../scripts/run_stage.py"


rule recompose_images:
    """What iterative z finds on ambiguous inputs (pixel mixtures of two classes)."""
    input:
        generative=rules.train_image_generative.output.model,
        test=rules.prepare_images.output.test,
    output:
        table="results/images/seed{seed}/recomposition.csv",
    log:
        "logs/recompose_images/seed{seed}.log",
    benchmark:
        "logs/benchmarks/recompose_images/seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("recompose_images"),
        config=images_config("recomposition"),
    script:
        "../scripts/run_stage.py"


rule tabulate_images:
    input:
        metrics=expand("results/images/seed{seed}/metrics.json", seed=config["seeds"]),
        recomposition=expand("results/images/seed{seed}/recomposition.csv", seed=config["seeds"]),
    output:
        accuracy=table("images_accuracy", "images"),
        ood=table("images_ood", "images"),
        calibration=table("images_calibration", "images"),
        recomposition="results/tables/images_recomposition.csv",
    log:
        "logs/tabulate_images.log",
    benchmark:
        "logs/benchmarks/tabulate_images.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("tabulate_images"),
    script:
        "../scripts/run_stage.py"


rule plot_images:
    input:
        accuracy=rules.tabulate_images.output.accuracy,
        ood=rules.tabulate_images.output.ood,
        calibration=rules.tabulate_images.output.calibration,
        recomposition=rules.tabulate_images.output.recomposition,
        scores=expand("results/images/seed{seed}/scores.parquet", seed=config["seeds"]),
    output:
        accuracy=figure("images_accuracy", "images"),
        roc=figure("images_roc", "images"),
        calibration=figure("images_calibration", "images"),
        recomposition=figure("images_recomposition", "images"),
    log:
        "logs/plot_images.log",
    benchmark:
        "logs/benchmarks/plot_images.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("plot_images"),
        config=images_config("inference"),
    script:
        "../scripts/run_stage.py"
