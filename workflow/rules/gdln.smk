# Gated deep linear networks: XoR, routing, race and zero-shot runs against the reduced dynamics.


rule simulate_gdln:
    """Train a gated deep linear network and integrate its reduced dynamics (one experiment)."""
    output:
        rows="results/gdln/{experiment}/rows.parquet",
        arrays="results/gdln/{experiment}/arrays.npz",
        summary="results/gdln/{experiment}/summary.json",
    log:
        "logs/simulate_gdln/{experiment}.log",
    benchmark:
        "logs/benchmarks/simulate_gdln/{experiment}.tsv"
    wildcard_constraints:
        experiment="xor|routing|race|zero_shot",
    priority: LONG_JOBS_FIRST
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("simulate_gdln"),
        config=lambda wc: {
            "seed": config["gdln"]["seed"],
            wc.experiment: config["gdln"].get(wc.experiment, {}),
        },
    script:
        "../scripts/run_stage.py"


rule plot_gdln:
    input:
        **{
            f"{name}_{part}": f"results/gdln/{name}/{file}"
            for name in GDLN_EXPERIMENTS
            for part, file in (
                ("rows", "rows.parquet"),
                ("arrays", "arrays.npz"),
                ("summary", "summary.json"),
            )
        },
    output:
        checks=table("gdln_checks", "gdln"),
        xor=figure("gdln_xor", "gdln"),
        routing=figure("gdln_routing", "gdln"),
        race=figure("gdln_race", "gdln"),
        zero_shot=figure("gdln_zero_shot", "gdln"),
    log:
        "logs/plot_gdln.log",
    benchmark:
        "logs/benchmarks/plot_gdln.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("plot_gdln"),
    script:
        "../scripts/run_stage.py"
