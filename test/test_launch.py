"""The launch file and params file: parsed everywhere, launched where launch_ros imports."""
import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch' / 'localize.launch.py'


def test_launch_file_names_real_executable_params_and_arguments():
    tree = ast.parse(LAUNCH.read_text())
    calls = {node.func.id: node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    node = {kw.arg: kw.value for kw in calls['Node'].keywords}
    assert ast.literal_eval(node['package']) == 'deepseqslam_ros'
    executable = ast.literal_eval(node['executable'])
    setup = (ROOT / 'setup.py').read_text()
    assert re.search(rf"'{executable} = deepseqslam_ros\.localizer_node:main'", setup)
    assert "'localize.yaml'" in LAUNCH.read_text() and (ROOT / 'config' / 'localize.yaml').is_file()
    arguments = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                     and getattr(n.targets[0], 'id', '') == 'ARGUMENTS')
    names = set(ast.literal_eval(arguments.value))
    assert {'image_topic', 'odom_topic', 'checkpoint', 'device'} <= names
    params = yaml.safe_load((ROOT / 'config' / 'localize.yaml').read_text())['deepseqslam_localizer']['ros__parameters']
    assert names <= set(params)


def test_params_file_matches_node_parameters():
    from deepseqslam_ros.localizer_node import PARAMETERS
    params = yaml.safe_load((ROOT / 'config' / 'localize.yaml').read_text())['deepseqslam_localizer']['ros__parameters']
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        assert type(value) is type(PARAMETERS[name][0]), name


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None, reason='launch_ros is not installable here')
def test_launch_description_builds():
    from launch import LaunchDescription
    spec = importlib.util.spec_from_file_location('localize_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)
