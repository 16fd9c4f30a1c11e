"""Release gating: typed goals, the statistics they are decided with, and the verdict."""

from validation.goals import (
    AccuracyGoal,
    AgreementGoal,
    Evidence,
    Goal,
    GoalResult,
    Goals,
    LatencyGoal,
    Outcome,
    SizeGoal,
    SpeedupGoal,
)

__all__ = [
    "AccuracyGoal",
    "AgreementGoal",
    "Evidence",
    "Goal",
    "GoalResult",
    "Goals",
    "LatencyGoal",
    "Outcome",
    "SizeGoal",
    "SpeedupGoal",
]
