# Tables (polars) and figures (matplotlib) across seeds, each captioned for `snakemake --report`.


rule scorecard:
    """Each claim of the papers beside ours, with a verdict and the MLflow runs behind it."""
    input:
        **scorecard_inputs(),
    output:
        table=report(
            "results/scorecard.csv",
            caption="../report/scorecard.rst",
            category="0. Reproduction scorecard",
        ),
        metrics="results/scorecard.json",
    params:
        code=code_version("scorecard"),
        config={"tracking": config["tracking"]},
    localrule: True
    log:
        "logs/scorecard.log",
    benchmark:
        "logs/benchmarks/scorecard.tsv"
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
        summary=report(
            "results/tables/sequence_summary.csv",
            caption="../report/sequence_summary.rst",
            category="1. GBI toy sequences",
            subcategory="Tables",
        ),
        recomposition=report(
            "results/tables/sequence_recomposition.csv",
            caption="../report/sequence_recomposition_table.rst",
            category="1. GBI toy sequences",
            subcategory="Tables",
        ),
        curves="results/tables/sequence_learning_curves.csv",
        switch="results/tables/sequence_switch_accuracy.csv",
    localrule: True
    params:
        code=code_version("sequence_summary"),
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
        curves=report(
            "results/figures/sequence_learning_curves.png",
            caption="../report/sequence_learning_curves.rst",
            category="1. GBI toy sequences",
            subcategory="Figures",
        ),
        switch=report(
            "results/figures/sequence_switch_accuracy.png",
            caption="../report/sequence_switch_accuracy.rst",
            category="1. GBI toy sequences",
            subcategory="Figures",
        ),
        gradient=report(
            "results/figures/sequence_gradient_vs_posterior.png",
            caption="../report/sequence_gradient_vs_posterior.rst",
            category="1. GBI toy sequences",
            subcategory="Figures",
        ),
        recomposition=report(
            "results/figures/sequence_recomposition.png",
            caption="../report/sequence_recomposition.rst",
            category="1. GBI toy sequences",
            subcategory="Figures",
        ),
        forgetting=report(
            "results/figures/sequence_forgetting.png",
            caption="../report/sequence_forgetting.rst",
            category="1. GBI toy sequences",
            subcategory="Figures",
        ),
    localrule: True
    params:
        code=code_version("sequence_summary"),
    log:
        "logs/plot_sequence.log",
    benchmark:
        "logs/benchmarks/plot_sequence.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule plot_gdln:
    input:
        **{
            f"{name}_{part}": f"results/gdln/{name}/{file}"
            for name in GDLN_EXPERIMENTS
            for part, file in (("rows", "rows.parquet"), ("arrays", "arrays.npz"), ("summary", "summary.json"))
        },
    output:
        checks=report(
            "results/tables/gdln_checks.csv",
            caption="../report/gdln_checks.rst",
            category="3. Gated deep linear networks",
            subcategory="Tables",
        ),
        xor=report(
            "results/figures/gdln_xor.png",
            caption="../report/gdln_xor.rst",
            category="3. Gated deep linear networks",
            subcategory="Figures",
        ),
        routing=report(
            "results/figures/gdln_routing.png",
            caption="../report/gdln_routing.rst",
            category="3. Gated deep linear networks",
            subcategory="Figures",
        ),
        race=report(
            "results/figures/gdln_race.png",
            caption="../report/gdln_race.rst",
            category="3. Gated deep linear networks",
            subcategory="Figures",
        ),
        zero_shot=report(
            "results/figures/gdln_zero_shot.png",
            caption="../report/gdln_zero_shot.rst",
            category="3. Gated deep linear networks",
            subcategory="Figures",
        ),
    localrule: True
    params:
        code=code_version("gdln"),
    log:
        "logs/plot_gdln.log",
    benchmark:
        "logs/benchmarks/plot_gdln.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule tabulate_images:
    input:
        metrics=expand("results/images/seed{seed}/metrics.json", seed=config["seeds"]),
        recomposition=expand("results/images/seed{seed}/recomposition.csv", seed=config["seeds"]),
    output:
        accuracy=report(
            "results/tables/images_accuracy.csv",
            caption="../report/images_accuracy_table.rst",
            category="2. GBI image classifier",
            subcategory="Tables",
        ),
        ood=report(
            "results/tables/images_ood.csv",
            caption="../report/images_ood_table.rst",
            category="2. GBI image classifier",
            subcategory="Tables",
        ),
        calibration=report(
            "results/tables/images_calibration.csv",
            caption="../report/images_calibration_table.rst",
            category="2. GBI image classifier",
            subcategory="Tables",
        ),
        recomposition="results/tables/images_recomposition.csv",
    localrule: True
    params:
        code=code_version("images_summary"),
    log:
        "logs/tabulate_images.log",
    benchmark:
        "logs/benchmarks/tabulate_images.tsv"
    conda:
        CONDA_ENV
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
        accuracy=report(
            "results/figures/images_accuracy.png",
            caption="../report/images_accuracy.rst",
            category="2. GBI image classifier",
            subcategory="Figures",
        ),
        roc=report(
            "results/figures/images_roc.png",
            caption="../report/images_roc.rst",
            category="2. GBI image classifier",
            subcategory="Figures",
        ),
        calibration=report(
            "results/figures/images_calibration.png",
            caption="../report/images_calibration.rst",
            category="2. GBI image classifier",
            subcategory="Figures",
        ),
        recomposition=report(
            "results/figures/images_recomposition.png",
            caption="../report/images_recomposition.rst",
            category="2. GBI image classifier",
            subcategory="Figures",
        ),
    params:
        code=code_version("images_summary"),
        config=images_config("inference"),
    localrule: True
    log:
        "logs/plot_images.log",
    benchmark:
        "logs/benchmarks/plot_images.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule tabulate_geometry:
    input:
        rows=geometry_cells(),
        sequence=geometry_sequence_runs(),
    output:
        verdicts=report(
            "results/tables/geometry_verdicts.csv",
            caption="../report/geometry_verdicts.rst",
            category="4. Abstract representations",
            subcategory="Tables",
        ),
        summary=report(
            "results/tables/geometry_summary.csv",
            caption="../report/geometry_summary.rst",
            category="4. Abstract representations",
            subcategory="Tables",
        ),
        vs_p="results/tables/geometry_vs_p.csv",
        sequence=report(
            "results/tables/geometry_sequence.csv",
            caption="../report/geometry_sequence_table.rst",
            category="4. Abstract representations",
            subcategory="Tables",
        ),
    params:
        code=code_version("geometry_summary"),
    localrule: True
    log:
        "logs/tabulate_geometry.log",
    benchmark:
        "logs/benchmarks/tabulate_geometry.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule plot_geometry:
    input:
        summary=rules.tabulate_geometry.output.summary,
        vs_p=rules.tabulate_geometry.output.vs_p,
        sequence=rules.tabulate_geometry.output.sequence,
        rows=geometry_cells(),
    output:
        by_architecture=report(
            "results/figures/geometry_by_architecture.png",
            caption="../report/geometry_by_architecture.rst",
            category="4. Abstract representations",
            subcategory="Figures",
        ),
        vs_p=report(
            "results/figures/geometry_vs_p.png",
            caption="../report/geometry_vs_p.rst",
            category="4. Abstract representations",
            subcategory="Figures",
        ),
        vs_step=report(
            "results/figures/geometry_vs_step.png",
            caption="../report/geometry_vs_step.rst",
            category="4. Abstract representations",
            subcategory="Figures",
        ),
        sequence=report(
            "results/figures/geometry_sequence.png",
            caption="../report/geometry_sequence.rst",
            category="4. Abstract representations",
            subcategory="Figures",
        ),
    params:
        code=code_version("geometry_summary"),
    localrule: True
    log:
        "logs/plot_geometry.log",
    benchmark:
        "logs/benchmarks/plot_geometry.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule tabulate_language:
    input:
        inference=language_results(f"{LANGUAGE_RUNS}/inference.json", models=["gbi_lstm"]),
        recomposition=language_results(f"{LANGUAGE_RUNS}/recomposition.csv"),
        geometry=language_results(f"{LANGUAGE_RUNS}/geometry.json"),
        curves=language_results(f"{LANGUAGE_RUNS}/learning_curve.csv"),
    output:
        inference=report(
            "results/tables/language_inference.csv",
            caption="../report/language_inference_table.rst",
            category="5. GBI language model",
            subcategory="Tables",
        ),
        recomposition=report(
            "results/tables/language_recomposition.csv",
            caption="../report/language_recomposition_table.rst",
            category="5. GBI language model",
            subcategory="Tables",
        ),
        geometry=report(
            "results/tables/language_geometry.csv",
            caption="../report/language_geometry_table.rst",
            category="5. GBI language model",
            subcategory="Tables",
        ),
        curves="results/tables/language_learning_curves.csv",
    localrule: True
    params:
        code=code_version("language_summary"),
    log:
        "logs/tabulate_language.log",
    benchmark:
        "logs/benchmarks/tabulate_language.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"


rule plot_language:
    input:
        inference=rules.tabulate_language.output.inference,
        recomposition=rules.tabulate_language.output.recomposition,
        curves=rules.tabulate_language.output.curves,
        manifest=rules.gather_corpora.output.raw,
    output:
        inference=report(
            "results/figures/language_inference.png",
            caption="../report/language_inference.rst",
            category="5. GBI language model",
            subcategory="Figures",
        ),
        recomposition=report(
            "results/figures/language_recomposition.png",
            caption="../report/language_recomposition.rst",
            category="5. GBI language model",
            subcategory="Figures",
        ),
        corpora=report(
            "results/tables/language_corpora.csv",
            caption="../report/language_corpora.rst",
            category="5. GBI language model",
            subcategory="Tables",
        ),
    localrule: True
    params:
        code=code_version("language_summary"),
    log:
        "logs/plot_language.log",
    benchmark:
        "logs/benchmarks/plot_language.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
