#!/usr/bin/env python3
"""Writes src/Evaluation/Tasks/mmlu/: one task file per MMLU subject (57), a group per category and the `mmlu` group,
in lm-evaluation-harness's layout (tasks/mmlu/default): each subject includes _default_template_yaml and is tagged
with its category; the categories are the harness's (Hendrycks et al. 2021). Deterministic, stdlib only.

    python3 scripts/make_mmlu_tasks.py
"""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "Evaluation", "Tasks", "mmlu")

CATEGORIES = {
    "humanities": ["formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law", "world_religions"],
    "other": ["business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging", "management", "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting", "professional_medicine", "virology"],
    "social_sciences": ["econometrics", "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology", "human_sexuality", "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy"],
    "stem": ["abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry", "college_computer_science", "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science", "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning"],
}

TEMPLATE = """# MMLU (Hendrycks et al. 2021) as lm-evaluation-harness's mmlu/default: zero-shot unless --num-fewshot is given, the
# few-shot examples being the subject's dev rows in order (first_n). Data: cais/mmlu, one folder per subject
# (SUBJECT/test-*.parquet, SUBJECT/dev-*.parquet): --task-data mmlu=DIR.
dataset_path: cais/mmlu
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write(name, text):
    with open(os.path.join(OUT, name), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main():
    os.makedirs(OUT, exist_ok=True)
    write("_default_template_yaml", TEMPLATE)
    for cat, subjects in sorted(CATEGORIES.items()):
        for s in subjects:
            write(f"mmlu_{s}.yaml",
                  f'dataset_name: {s}\n'
                  f'description: "The following are multiple choice questions (with answers) about {s.replace("_", " ")}.\\n\\n"\n'
                  f'tag: mmlu_{cat}_tasks\n'
                  f'include: _default_template_yaml\n'
                  f'task: mmlu_{s}\n'
                  f'task_alias: {s}\n')
        write(f"_mmlu_{cat}.yaml",
              f"group: mmlu_{cat}\ngroup_alias: {cat}\ntask:\n  - mmlu_{cat}_tasks\n"
              "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n")
    write("_mmlu.yaml", "group: mmlu\ntask:\n" + "".join(f"  - mmlu_{c}\n" for c in sorted(CATEGORIES))
          + "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n")
    print(f"mmlu: {sum(len(v) for v in CATEGORIES.values())} subjects, {len(CATEGORIES)} categories -> {OUT}")


if __name__ == "__main__":
    main()
