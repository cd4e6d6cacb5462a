"""recbole-pcl: prompt-based continual learning for user modelling, as a RecBole plugin.

RecBole itself is installed by scripts/setup_env.sh with --no-deps: recbole 1.2.1's metadata pins
ray<=2.6.3 (no Python 3.12 wheel, broken under numpy 2). requirements.txt lists what it needs.
"""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="recbole-pcl",
    version="0.1.0",
    description="Prompt-based continual learning (PCL) for user modelling on RecBole",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_pcl", "recbole_pcl.*"]) + ["recbole_pcl.properties"],
    # The yaml property files live in properties/ at the top of the repository (RecBole's layout)
    # and are installed as the package data recbole_pcl/properties.
    package_dir={"recbole_pcl.properties": "properties"},
    package_data={"recbole_pcl.properties": ["*.yaml", "dataset/*.yaml", "model/*.yaml", "experiment/*.yaml"]},
    install_requires=requirements,
    py_modules=["run_recbole_pcl", "run_experiment"],
    entry_points={"console_scripts": ["run_recbole_pcl=run_recbole_pcl:main", "run_experiment=run_experiment:main"]},
)
