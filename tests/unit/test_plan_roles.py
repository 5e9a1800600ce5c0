"""Raft role planning: how many voters and stand-bys, who replaces whom."""

from dqliteclient import NodeInfo
from dqlitewire import NodeRole

from cantainer.events.raft import plan_roles

V, S, P = NodeRole.VOTER, NodeRole.STANDBY, NodeRole.SPARE


def nodes(*roles):
    return [NodeInfo(i, f"192.0.2.{i}:9000", r) for i, r in enumerate(roles, 1)]


def apply(members, changes):
    roles = {n.node_id: n.role for n in members}
    roles.update(dict(changes))
    return roles


def test_new_spares_become_voters_up_to_three():
    members = nodes(V, P, P)
    assert plan_roles(members, {1, 2, 3}, leader=1, standbys=3) == [(2, V), (3, V)]


def test_beyond_three_voters_spares_become_standbys():
    members = nodes(V, V, V, P, P, P, P)
    changes = plan_roles(members, set(range(1, 8)), leader=1, standbys=3)
    assert changes == [(4, S), (5, S), (6, S)]


def test_an_offline_voter_is_replaced_by_a_standby_promotion_first():
    members = nodes(V, V, V, S)
    changes = plan_roles(members, {1, 2, 4}, leader=1, standbys=3)
    assert changes == [(4, V), (3, P)]
    assert changes.index((4, V)) < changes.index((3, P))


def test_an_offline_voter_without_replacement_keeps_its_seat():
    assert plan_roles(nodes(V, V, V), {1, 2}, leader=1, standbys=3) == []


def test_a_balanced_group_needs_no_change():
    assert plan_roles(nodes(V, V, V, S, S, S, P), set(range(1, 8)), leader=2, standbys=3) == []


def test_too_many_voters_are_demoted_but_never_the_leader():
    members = nodes(V, V, V, V, V)
    changes = plan_roles(members, set(range(1, 6)), leader=5, standbys=3)
    roles = apply(members, changes)
    assert roles[5] == V
    assert sum(r == V for r in roles.values()) == 3
    assert sum(r == S for r in roles.values()) == 2


def test_offline_standbys_go_to_spare_and_online_spares_take_over():
    members = nodes(V, V, V, S, P)
    changes = plan_roles(members, {1, 2, 3, 5}, leader=1, standbys=3)
    roles = apply(members, changes)
    assert roles[5] == S and roles[4] == P


def test_one_standby_by_default():
    members = nodes(V, V, V, P, P, P, P)
    assert plan_roles(members, set(range(1, 8)), leader=1) == [(4, S)]
