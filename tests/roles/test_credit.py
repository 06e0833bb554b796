"""The credit rules of protocol/credit.py, both sides together without sockets: what the weights body carries
from LearnerCredit.grant is what ActorCredit.on_weights reads (the processes' own use of them is in
test_processes.py and test_liveness.py)."""
from magicmask.protocol.credit import ActorCredit, Admission, LearnerCredit

ACTOR, OTHER = 0xA1, 0xB2  # actor incarnations


def test_an_actor_sends_at_most_max_inflight_beyond_what_was_dealt_with():
    actor, learner = ActorCredit(max_inflight=2, incarnation=ACTOR), LearnerCredit(n_agents=3)
    for _ in range(2):
        assert actor.can_send()
        actor.on_sent()
        assert learner.admit(1, ACTOR) in (Admission.FIRST, Admission.SAME)
    assert not actor.can_send() and actor.in_flight == 2
    learner.deal(1, 2)  # an update trained both
    actor.on_weights({"target": 1, **learner.grant(1)})
    assert actor.can_send() and actor.in_flight == 0


def test_credit_never_goes_back_and_ignores_another_incarnation():
    actor = ActorCredit(max_inflight=1, incarnation=ACTOR)
    actor.on_sent()
    actor.on_weights({"incarnation": OTHER, "fragments": 5})   # the learner counts for another incarnation
    assert actor.returned == 0 and not actor.can_send()
    actor.on_weights({"incarnation": ACTOR, "fragments": 1})
    actor.on_weights({"incarnation": ACTOR, "fragments": 0})   # an older weights message, late
    assert actor.returned == 1 and actor.can_send()
    actor.on_weights({"incarnation": ACTOR, "fragments": "1"})  # not a count
    assert actor.returned == 1


def test_a_stale_drop_returns_its_credit_at_once():
    actor, learner = ActorCredit(max_inflight=1, incarnation=ACTOR), LearnerCredit(n_agents=1)
    actor.on_sent()
    learner.admit(0, ACTOR)
    learner.deal(0)  # dropped for policy lag: dealt with, never trained
    actor.on_weights(learner.grant(0))
    assert actor.can_send()


def test_a_new_actor_incarnation_retires_the_old_one():
    learner = LearnerCredit(n_agents=2)
    assert learner.grant(0) == {"incarnation": 0, "fragments": 0}  # nobody seen yet
    assert learner.admit(0, ACTOR) is Admission.FIRST
    learner.deal(0, 4)
    assert learner.admit(0, ACTOR) is Admission.SAME and learner.grant(0) == {"incarnation": ACTOR, "fragments": 4}
    assert learner.admit(0, OTHER) is Admission.REPLACED
    assert learner.grant(0) == {"incarnation": OTHER, "fragments": 0}
    assert learner.admit(0, ACTOR) is Admission.RETIRED                # a late fragment of the old one
    assert learner.grant(0)["incarnation"] == OTHER
    assert learner.admit(1, ACTOR) is Admission.FIRST                  # per agent


def test_a_new_learner_incarnation_restarts_the_actors_count():
    actor = ActorCredit(max_inflight=2, incarnation=ACTOR)
    actor.on_sent()
    actor.on_sent()
    actor.on_weights({"incarnation": ACTOR, "fragments": 1})
    actor.on_learner_restart()
    assert (actor.sent, actor.returned) == (0, 0) and actor.can_send()
    fresh = LearnerCredit(n_agents=1)  # the new learner knows nothing of what was sent before
    fresh.admit(0, ACTOR)
    actor.on_sent()
    actor.on_weights(fresh.grant(0))
    assert actor.in_flight == 1
