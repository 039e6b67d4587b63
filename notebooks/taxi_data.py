"""A realistic, reproducible taxi-trip data set for the notebooks (no download needed).

``trips(n, seed)`` draws ``n`` trips in a city of twelve zones: pickups cluster around zone
centres (busier zones more often), destinations favour nearby zones (a gravity model),
fares follow the metered tariff (base + per km) with lognormal noise, about 30% of riders
tip nothing and the rest a lognormal share of the fare, riders repeat with a Zipf
distribution (a few regulars, a long tail), and pickups follow a day's demand curve.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ZONES = {
    "Harbour": (40.700, -74.015), "Old Town": (40.712, -74.002), "Market": (40.725, -73.995),
    "University": (40.735, -73.990), "Riverside": (40.748, -74.005), "Central": (40.758, -73.985),
    "Museum Mile": (40.775, -73.962), "Parkside": (40.785, -73.970), "Northgate": (40.805, -73.955),
    "Airport": (40.645, -73.785), "Eastport": (40.720, -73.940), "Hillcrest": (40.760, -73.920),
}
BASE_FARE, PER_KM = 3.0, 1.75
# Demand by hour of day: quiet at night, peaks at the morning and evening commutes.
HOURLY = np.array([2, 1, 1, 1, 1, 2, 4, 7, 9, 7, 5, 5, 6, 6, 6, 7, 8, 9, 9, 8, 7, 6, 4, 3], dtype=float)


def _km(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def trips(n: int = 200_000, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = list(ZONES)
    centres = np.array([ZONES[z] for z in names])
    popularity = rng.dirichlet(np.full(len(names), 2.0))
    pickup_zone = rng.choice(len(names), n, p=popularity)
    # Gravity model: destination probability falls with distance from the pickup zone.
    dist = _km(centres[:, None, 0], centres[:, None, 1], centres[None, :, 0], centres[None, :, 1])
    weights = popularity[None, :] / (1.0 + dist) ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(weights, axis=1)[pickup_zone]
    dropoff_zone = np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), len(names) - 1)
    jitter = 0.006
    plat = centres[pickup_zone, 0] + rng.normal(0, jitter, n)
    plon = centres[pickup_zone, 1] + rng.normal(0, jitter, n)
    dlat = centres[dropoff_zone, 0] + rng.normal(0, jitter, n)
    dlon = centres[dropoff_zone, 1] + rng.normal(0, jitter, n)
    road_km = _km(plat, plon, dlat, dlon) * rng.uniform(1.15, 1.45, n)  # streets are not straight
    fare = np.round((BASE_FARE + PER_KM * road_km) * rng.lognormal(0, 0.08, n), 2)
    tip = np.where(rng.random(n) < 0.3, 0.0, np.round(fare * rng.lognormal(np.log(0.15), 0.35, n), 2))
    riders = rng.zipf(1.3, n) % 40_000
    hour = rng.choice(24, n, p=HOURLY / HOURLY.sum())
    return pa.table({
        "trip_id": np.arange(n),
        "hour": hour,
        "pickup_zone": pa.array([names[i] for i in pickup_zone]),
        "pickup_lat": plat, "pickup_lon": plon, "dropoff_lat": dlat, "dropoff_lon": dlon,
        "fare": fare, "tip": tip, "rider_id": riders.astype(np.int64),
        "payment": pa.array(np.where(tip > 0, "card", rng.choice(["card", "cash"], n, p=[0.6, 0.4]))),
    })
