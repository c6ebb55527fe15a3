# Tables (polars) and figures (matplotlib) across seeds, each captioned for `snakemake --report`.


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
    log:
        "logs/plot_gdln.log",
    benchmark:
        "logs/benchmarks/plot_gdln.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/run_stage.py"
