# Abstract representations: a sweep of MLPs (PS, CCGP, shattering with nulls), the same metrics on the
# sequence models' hidden state, then the verdict tables and figures.


rule sweep_geometry:
    """One cell of the abstraction sweep: MLPs on latent tasks, the random-task variant and Johnston & Fusi's multitask protocol, all seeds."""
    output:
        rows="results/geometry/sweep/d{d}/{activation}/depth{depth}/width{width}/wd{weight_decay}.parquet",
    log:
        "logs/sweep_geometry/d{d}_{activation}_depth{depth}_width{width}_wd{weight_decay}.log",
    benchmark:
        "logs/benchmarks/sweep_geometry/d{d}_{activation}_depth{depth}_width{width}_wd{weight_decay}.tsv"
    wildcard_constraints:
        activation="relu|tanh|gelu|leaky_relu|sigmoid",
        d=r"\d+",
        depth=r"\d+",
        width=r"\d+",
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("sweep_geometry"),
        config=geometry_config(
            "seeds", "random_tasks", "random_tasks_depths", "steps", "eval_steps", "network", "multitask"
        ),
    script:
        "../scripts/run_stage.py"


rule sequence_geometry:
    """Parallelism Score, CCGP and shattering of a sequence model's hidden state (task x observation)."""
    input:
        model=rules.train_sequence.output.model,
        test=rules.generate_sequences.output.test,
    output:
        metrics=f"{SEQUENCE_RUNS}/geometry.json",
    log:
        "logs/sequence_geometry/{model}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/sequence_geometry/{model}_seed{seed}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        code=stage_code("sequence_geometry"),
        config=geometry_config("sequence_null_draws", "sequence_null_decoding_draws"),
    script:
        "../scripts/run_stage.py"


rule tabulate_geometry:
    input:
        rows=geometry_cells(),
        sequence=geometry_sequence_runs(),
    output:
        verdicts=table("geometry_verdicts", "geometry"),
        summary=table("geometry_summary", "geometry"),
        vs_p="results/tables/geometry_vs_p.csv",
        multitask=table("geometry_multitask", "geometry"),
        sequence=table("geometry_sequence", "geometry"),
    log:
        "logs/tabulate_geometry.log",
    benchmark:
        "logs/benchmarks/tabulate_geometry.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("tabulate_geometry"),
    script:
        "../scripts/run_stage.py"


rule plot_geometry:
    input:
        summary=rules.tabulate_geometry.output.summary,
        vs_p=rules.tabulate_geometry.output.vs_p,
        multitask=rules.tabulate_geometry.output.multitask,
        sequence=rules.tabulate_geometry.output.sequence,
        rows=geometry_cells(),
    output:
        by_architecture=figure("geometry_by_architecture", "geometry"),
        vs_p=figure("geometry_vs_p", "geometry"),
        multitask=figure("geometry_multitask", "geometry"),
        vs_step=figure("geometry_vs_step", "geometry"),
        sequence=figure("geometry_sequence", "geometry"),
    log:
        "logs/plot_geometry.log",
    benchmark:
        "logs/benchmarks/plot_geometry.tsv"
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=stage_code("plot_geometry"),
    script:
        "../scripts/run_stage.py"
