"""Gated deep linear networks and the neural race reduction (Saxe, Sodhani & Lewallen, ICML 2022).

network: the GDLN graph model (+ the vectorised routing network and the XoR ReLU comparison).
reduction: closed-form single-pathway solution and the reduced routing / race ODEs.

"""

from taskabs.gdln.network import (
    GatedDeepLinearNetwork,
    GDLNConfig,
    RoutingConfig,
    RoutingNetwork,
    TwoLayerReLU,
    cyclic_routes,
    gated_squared_loss,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    gated_correlations,
    integrate_race,
    integrate_routing,
    integrate_single_pathway,
    race_balanced_ratio,
    race_speed,
    routing_conserved,
    routing_steady_state,
    single_pathway_closed_form,
)

__all__ = [
    "GatedDeepLinearNetwork",
    "GDLNConfig",
    "RoutingConfig",
    "RoutingNetwork",
    "TwoLayerReLU",
    "cyclic_routes",
    "gated_squared_loss",
    "gradient_descent_step",
    "gated_correlations",
    "integrate_race",
    "integrate_routing",
    "integrate_single_pathway",
    "race_balanced_ratio",
    "race_speed",
    "routing_conserved",
    "routing_steady_state",
    "single_pathway_closed_form",
]
