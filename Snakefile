# fer-pipeline: video facial-expression recognition as a reproducible DAG. Logic lives in fer_pipeline/;
# the rules in workflow/rules/ each call one function of it. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/motion.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/nlstm.smk"
include: "workflow/rules/frafer.smk"
include: "workflow/rules/classical.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
