"""``python -m taskabs.pipeline.audit resolve <snakemake args>`` (the audit's DAG dump), else the audit."""

import sys

from taskabs.pipeline.audit import main
from taskabs.pipeline.audit.records import _dump_dag

if sys.argv[1:2] == ["resolve"]:
    sys.exit(_dump_dag(sys.argv[2:]))
sys.exit(main())
