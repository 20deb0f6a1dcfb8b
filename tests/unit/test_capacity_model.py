"""bench/capacity_model.py's arithmetic (issue 20): the bus copies per message, the
fixed point for the cores, and the per-node bus bound that makes a uniform spread
infeasible."""

import importlib.util
import math
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "capacity_model.py")
_spec = importlib.util.spec_from_file_location("capacity_model", _PATH)
model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(model)

CHEAP = dict(model.MEASURED, cpu_us_per_message_node=10.0)


def test_nodes_reached_bounds():
    assert model.nodes_reached(1, 500) == 1.0
    assert model.nodes_reached(10, 1) == pytest.approx(1.0)
    # a room far bigger than the node count has members on (almost) every node
    assert model.nodes_reached(10, 1000) == pytest.approx(10.0)
    assert 1.0 < model.nodes_reached(10, 5) < 5.0


def test_nodes_placed_is_the_rooms_share_plus_one_straddle():
    # 100 nodes, 500k online users: 5,000 per node; a room of 50 sits on 1.01 nodes
    assert model.nodes_placed(100, 50, 500_000) == pytest.approx(1.01)
    # never more nodes than there are
    assert model.nodes_placed(4, 10_000, 1000) == 4.0
    assert model.nodes_placed(1, 50, 1000) == 1.0


def test_cores_are_the_fixed_point_of_the_cpu_sum():
    row = model.plan(CHEAP, 100_000, 10_000, 50, 5_000, placement="uniform")
    assert row["feasible"] and row["runs_out_first"] == "CPU"
    n = row["chatd_cores"]
    copies = model.nodes_reached(n, 25)
    cpu_s = (
        125_000 * CHEAP["cpu_us_per_delivery"]
        + 5_000 * copies * CHEAP["cpu_us_per_message_node"]
        + 5_000 * CHEAP["cpu_us_per_send"]
    ) / 1e6
    assert n == math.ceil(cpu_s / 0.7)
    assert row["bus_copies_per_message"] == round(copies, 1)


def test_uniform_spread_is_infeasible_when_one_nodes_bus_share_exceeds_its_core():
    # 5,000 msg/s reaching every node at 228 us each: 1.1 cores of bus work per node
    # whatever the node count
    row = model.plan(model.MEASURED, 100_000, 10_000, 50, 5_000, placement="uniform")
    assert not row["feasible"]
    assert row["runs_out_first"] == "infeasible: bus per node"
    assert row["bus_core_share_per_node"] >= 0.7
    placed = model.plan(model.MEASURED, 100_000, 10_000, 50, 5_000, placement="room")
    assert placed["feasible"] and placed["bus_core_share_per_node"] < 0.7
    assert placed["bus_copies_per_message"] < 1.2


def test_main_prints_a_row_per_scenario_and_placement(capsys):
    rows = model.main([])
    assert len(rows) == 2 * len(model.SCENARIOS)
    assert {r["placement"] for r in rows} == {"uniform", "room"}
    rows = model.main(["--placement", "room", "--users", "1000", "--rate", "10"])
    assert len(rows) == 1 and rows[0]["feasible"] and rows[0]["chatd_cores"] == 1
    assert "first limit" in capsys.readouterr().out
