"""Release gating: typed goals, the statistics they are decided with, and the verdict."""

from validation.goals import (
    AccuracyGoal,
    AgreementGoal,
    ChampionGoal,
    Evidence,
    FidelityGoal,
    Goal,
    GoalResult,
    Goals,
    LatencyGoal,
    Outcome,
    PerClassGoal,
    SizeGoal,
    SpeedupGoal,
)

__all__ = [
    "AccuracyGoal",
    "AgreementGoal",
    "ChampionGoal",
    "Evidence",
    "FidelityGoal",
    "Goal",
    "GoalResult",
    "Goals",
    "LatencyGoal",
    "Outcome",
    "PerClassGoal",
    "SizeGoal",
    "SpeedupGoal",
]
