"""Analytic teacher flows, one module per family. Importing this package registers every system.

=====================  ==============  =====================================================
family                 module          systems
=====================  ==============  =====================================================
linear (closed form)   ``linear``      ``linear_spiral``, ``harmonic_oscillator``
oscillators            ``oscillators`` ``van_der_pol``, ``duffing``, ``damped_pendulum``
ecology                ``ecology``     ``lotka_volterra``
chaos                  ``chaos``       ``lorenz63``
time dependent         ``time_dependent`` ``double_gyre``
transport (3-D)        ``transport``   ``moons_shear``, ``spiral_twist``, ``circles_lift``
=====================  ==============  =====================================================
"""

from systems.flows import chaos, ecology, linear, oscillators, time_dependent, transport  # noqa: F401
from systems.flows.chaos import Lorenz63
from systems.flows.ecology import LotkaVolterra
from systems.flows.linear import HarmonicOscillator, LinearSpiral
from systems.flows.oscillators import DampedPendulum, Duffing, VanDerPol
from systems.flows.time_dependent import DoubleGyre
from systems.flows.transport import CirclesLift, MoonsShear, SpiralTwist, TransportFlow

__all__ = [
    "CirclesLift",
    "DampedPendulum",
    "DoubleGyre",
    "Duffing",
    "HarmonicOscillator",
    "LinearSpiral",
    "Lorenz63",
    "LotkaVolterra",
    "MoonsShear",
    "SpiralTwist",
    "TransportFlow",
    "VanDerPol",
]
