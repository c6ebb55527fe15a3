# The scorecard (every claim beside the paper's, with the runs behind it) and the data-only target.


rule scorecard:
    """Each claim of the papers beside ours, with a verdict and the MLflow runs behind it."""
    input:
        **scorecard.inputs(config),
    output:
        table=report(
            "results/scorecard.csv",
            caption="../report/scorecard.rst",
            category="0. Reproduction scorecard",
        ),
        metrics="results/scorecard.json",
    log:
        "logs/scorecard.log",
    benchmark:
        "logs/benchmarks/scorecard.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("scorecard"),
        config={
            "tracking": config["tracking"],
            "experiments": {key: config[key] for key in scorecard.EXPERIMENTS},
        },
    script:
        "../scripts/run_stage.py"


rule data:
    """Every dataset of the enabled experiments (the target of the DVC `data` stage)."""
    input:
        data_targets(),
    localrule: True
