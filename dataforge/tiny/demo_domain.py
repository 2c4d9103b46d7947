"""The demo's domain data: the ops/support desk of Verdant Row, a made-up hydroponic greenhouse company.

Everything here was written for this project, so no base model has seen it: fictional products
(VR-Grow A/B concentrates, the DoseMate dosing controller, the Row Console ops app), alarm codes and
sites. Answers follow one house style, a `Diagnosis:` line and then numbered steps, which a tiny
model can pick up with a LoRA in a few dozen steps, so a tune visibly moves ROUGE on held-out
questions. Each problem kind draws its wording from small phrase banks, so records of the same kind
share a style without being near copies of one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from random import Random


@dataclass(frozen=True, slots=True)
class Crop:
    name: str
    ph: tuple[float, float]
    ec: tuple[float, float]  # mS/cm
    light_hours: int
    max_water_c: int


CROPS = (
    Crop("butterhead lettuce", (5.8, 6.2), (0.8, 1.2), 16, 22),
    Crop("romaine", (5.8, 6.2), (1.0, 1.4), 16, 22),
    Crop("Genovese basil", (5.8, 6.4), (1.2, 1.6), 16, 24),
    Crop("curly kale", (6.0, 6.5), (1.4, 1.8), 14, 22),
    Crop("strawberries", (5.6, 6.0), (1.6, 2.2), 12, 21),
    Crop("cherry tomatoes", (5.8, 6.3), (2.0, 3.0), 14, 24),
    Crop("spearmint", (5.8, 6.5), (1.2, 1.6), 15, 23),
    Crop("bok choy", (6.0, 6.5), (1.2, 1.6), 14, 22),
    Crop("baby spinach", (6.0, 6.5), (1.2, 1.8), 12, 20),
    Crop("pea shoots", (5.8, 6.2), (0.6, 1.0), 16, 21),
)
SITES = ("Fernhollow", "Marrow Lane", "Quill Creek", "Saltmarsh Yard")
BAYS = tuple(f"Bay {i}" for i in range(1, 9))
ROWS = tuple(f"Row {c}" for c in "ABCDEF")
PUMPS = tuple(f"P-{n}" for n in (101, 102, 103, 104, 201, 202, 203, 301))
RESERVOIRS = tuple(f"R{i}" for i in range(1, 7))


@dataclass(frozen=True, slots=True)
class Scene:
    """Where a ticket comes from: one crop in one bay of one site."""

    crop: Crop
    site: str
    bay: str
    row: str
    pump: str
    reservoir: str

    @property
    def where(self) -> str:
        return f"{self.bay} ({self.site})"


def random_scene(r: Random) -> Scene:
    return Scene(r.choice(CROPS), r.choice(SITES), r.choice(BAYS), r.choice(ROWS), r.choice(PUMPS),
                 r.choice(RESERVOIRS))


def house_answer(diagnosis: str, steps: list[str]) -> str:
    """The Verdant Row house style: one diagnosis line, then numbered steps."""
    return "Diagnosis: " + diagnosis + "\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def _rng(lo: float, hi: float) -> str:
    return f"{lo:.1f}-{hi:.1f}"


def _log_step(r: Random, kind: str) -> str:
    return r.choice((
        f"Log the readings and what you changed in Row Console under '{kind}'.",
        f"Close the loop in Row Console: open a '{kind}' ticket with before and after readings.",
        f"Record it in Row Console ('{kind}') so the night shift sees the change.",
    ))


def _reading_input(s: Scene, ph: float, ec: float, water: int) -> str:
    return (f"Site: {s.site} | {s.bay}, {s.row} | crop: {s.crop.name} | pH {ph:.1f} | "
            f"EC {ec:.1f} mS/cm | water {water} C")


Example = dict[str, str]


def ph_high(r: Random) -> Example:
    s = random_scene(r)
    lo, hi = s.crop.ph
    ph = round(hi + r.uniform(0.4, 1.2), 1)
    steps = [
        r.choice((f"Check the pH probe in {s.reservoir} against the pH 7.0 buffer before dosing.",
                  "Confirm the reading with the handheld VR-Probe; a fouled probe reads high.")),
        r.choice((f"Dose VR-Acid 25 (pH Down) at 5 ml per 100 L into {s.reservoir} and let it circulate 15 minutes.",
                  "Add pH Down (VR-Acid 25) in 5 ml per 100 L steps, waiting 15 minutes between doses.")),
        f"Stop when the reading is inside {_rng(lo, hi)} for {s.crop.name}.",
        r.choice(("If the pH climbs again within a day, check the DoseMate acid line for air or an empty tote.",
                  "If it drifts up again overnight, inspect the DoseMate acid pump and refill the VR-Acid 25 tote.")),
        _log_step(r, "pH correction"),
    ]
    diagnosis = f"pH {ph:.1f} is above the {_rng(lo, hi)} range for {s.crop.name}; iron and manganese lock out."
    if r.random() < 0.4:
        return {"instruction": r.choice(("What is wrong with this reading and what should the grower do?",
                                         "Diagnose this Row Console reading.",
                                         "Triage this reservoir reading for the grower.")),
                "input": _reading_input(s, ph, r.uniform(*s.crop.ec), r.randint(18, s.crop.max_water_c)),
                "output": house_answer(diagnosis, steps)}
    q = r.choice((f"The {s.crop.name} in {s.where} show pH {ph:.1f}. What should I do?",
                  f"Reservoir {s.reservoir} for {s.crop.name} reads pH {ph:.1f}. How do we bring it down?",
                  f"pH on the {s.crop.name} line in {s.bay} is {ph:.1f}, is that a problem?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def ph_low(r: Random) -> Example:
    s = random_scene(r)
    lo, hi = s.crop.ph
    ph = round(lo - r.uniform(0.4, 1.0), 1)
    steps = [
        r.choice(("Rinse the probe and recheck with the handheld VR-Probe.",
                  f"Verify the pH probe in {s.reservoir} with the pH 4.0 and 7.0 buffers.")),
        r.choice((f"Dose VR-Base 10 (pH Up) at 3 ml per 100 L into {s.reservoir}, then circulate 15 minutes.",
                  "Add pH Up (VR-Base 10) 3 ml per 100 L at a time; it is stronger than the acid, so go slowly.")),
        f"Bring it back into {_rng(lo, hi)} for {s.crop.name} and recheck after one hour.",
        r.choice(("Check that the DoseMate acid pump is not stuck on; a stuck pump overdoses acid.",
                  "Look at the DoseMate dosing log: repeated acid doses point to a bad setpoint.")),
        _log_step(r, "pH correction"),
    ]
    diagnosis = f"pH {ph:.1f} is below the {_rng(lo, hi)} range for {s.crop.name}; calcium and magnesium uptake suffer."
    if r.random() < 0.4:
        return {"instruction": r.choice(("What is wrong with this reading and what should the grower do?",
                                         "Diagnose this Row Console reading.",
                                         "Read this log line and tell the grower the fix.")),
                "input": _reading_input(s, ph, r.uniform(*s.crop.ec), r.randint(18, s.crop.max_water_c)),
                "output": house_answer(diagnosis, steps)}
    q = r.choice((f"pH dropped to {ph:.1f} on the {s.crop.name} in {s.where}. What now?",
                  f"Why would reservoir {s.reservoir} ({s.crop.name}) read pH {ph:.1f}, and how do I fix it?",
                  f"Our {s.crop.name} solution sits at pH {ph:.1f}. Next steps?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def ec_high(r: Random) -> Example:
    s = random_scene(r)
    lo, hi = s.crop.ec
    ec = round(hi + r.uniform(0.5, 1.5), 1)
    litres = r.choice((200, 300, 400, 500))
    steps = [
        r.choice(("Confirm with the handheld EC meter; temperature-compensate to 25 C.",
                  f"Check the EC probe in {s.reservoir} against the 1.41 mS/cm standard.")),
        r.choice((f"Top up {s.reservoir} ({litres} L) with plain RO water until EC is inside {_rng(lo, hi)}.",
                  f"Dilute with RO water: roughly {int(litres * (ec - hi) / ec)} L of fresh water for a {litres} L reservoir.")),
        r.choice(("Check for salt crust on the media and flush the affected trays with pH 6.0 water.",
                  "Look at the leaf edges; burnt tips mean the high EC has lasted more than a day.")),
        "Lower the DoseMate EC setpoint if it was raised by mistake.",
        _log_step(r, "EC correction"),
    ]
    diagnosis = f"EC {ec:.1f} mS/cm is above {_rng(lo, hi)} for {s.crop.name}; the roots are under salt stress."
    if r.random() < 0.4:
        return {"instruction": r.choice(("Diagnose this Row Console reading.",
                                         "What does this reading mean for the crop?",
                                         "Tell the grower what to change based on this reading.")),
                "input": _reading_input(s, r.uniform(*s.crop.ph), ec, r.randint(18, s.crop.max_water_c)),
                "output": house_answer(diagnosis, steps)}
    q = r.choice((f"EC on the {s.crop.name} in {s.where} is {ec:.1f}. Too high?",
                  f"Reservoir {s.reservoir} ({litres} L, {s.crop.name}) shows EC {ec:.1f} mS/cm. How do I correct it?",
                  f"The {s.crop.name} leaves look crispy and EC reads {ec:.1f}. What should we do?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def ec_low(r: Random) -> Example:
    s = random_scene(r)
    lo, hi = s.crop.ec
    ec = round(max(0.2, lo - r.uniform(0.3, 0.7)), 1)
    litres = r.choice((200, 300, 400, 500))
    dose = round(litres * 2 * (lo - ec + 0.2) / 1.0)
    steps = [
        r.choice(("Check that the DoseMate concentrate totes are not empty.",
                  "Confirm the VR-Grow A and B totes have stock and the dosing lines are primed.")),
        f"Add VR-Grow A and VR-Grow B in equal parts, about {dose} ml each for {litres} L, A first, then B.",
        r.choice(("Never pour A and B together undiluted; calcium and sulphate precipitate.",
                  "Mix A fully into the water before adding B, or the concentrates will cloud.")),
        f"Recheck after 20 minutes and stop inside {_rng(lo, hi)} mS/cm.",
        _log_step(r, "EC correction"),
    ]
    diagnosis = f"EC {ec:.1f} mS/cm is below {_rng(lo, hi)} for {s.crop.name}; the plants are underfed."
    if r.random() < 0.4:
        return {"instruction": r.choice(("Diagnose this Row Console reading.",
                                         "What does this reading mean for the crop?",
                                         "Read this log line and tell the grower the fix.")),
                "input": _reading_input(s, r.uniform(*s.crop.ph), ec, r.randint(18, s.crop.max_water_c)),
                "output": house_answer(diagnosis, steps)}
    q = r.choice((f"EC is only {ec:.1f} on the {s.crop.name} in {s.where}. How much nutrient do I add?",
                  f"{s.reservoir} holds {litres} L for {s.crop.name} and EC reads {ec:.1f}. What is the fix?",
                  f"Pale new growth on {s.crop.name}, EC {ec:.1f}. What should the grower do?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def _alarm(code: str, title: str, diagnosis: Callable[[Scene], str], steps: Callable[[Random, Scene], list[str]]):
    def make(r: Random) -> Example:
        s = random_scene(r)
        answer = house_answer(diagnosis(s), steps(r, s))
        if r.random() < 0.5:
            hour = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}"
            return {"instruction": r.choice(("A pump alarm came in. What should the on-call tech do?",
                                             "Triage this alarm from Row Console.",
                                             "What does this alarm mean and how do we clear it?")),
                    "input": f"ALARM {code} {title} | pump {s.pump} | {s.reservoir} | {s.where} | {hour}",
                    "output": answer}
        q = r.choice((f"Pump {s.pump} in {s.where} is showing alarm {code}. What do I do?",
                      f"What does alarm {code} on {s.pump} mean?",
                      f"We keep getting {code} ({title.lower()}) on {s.pump}. How do we fix it?"))
        return {"instruction": q, "input": "", "output": answer}

    make.__name__ = f"alarm_{code.lower()}"
    return make


alarm_e14 = _alarm(
    "E14", "DRY RUN",
    lambda s: f"alarm E14 means {s.pump} is running dry; the level in {s.reservoir} is below the intake.",
    lambda r, s: [
        f"Switch {s.pump} to OFF on the Row Console pump page so it stops running dry.",
        r.choice((f"Check the level in {s.reservoir} and the float switch; refill to the 80 % mark.",
                  f"Refill {s.reservoir} to 80 % and make sure the float switch moves freely.")),
        r.choice(("Bleed air from the pump head with the purge valve before restarting.",
                  "Prime the pump: open the purge valve until water, not air, comes out.")),
        f"Restart {s.pump} and watch the flow reading for two minutes.",
        _log_step(r, "pump alarm"),
    ])
alarm_e21 = _alarm(
    "E21", "PRESSURE LOW",
    lambda s: f"alarm E21 means low line pressure after {s.pump}, usually a clogged filter.",
    lambda r, s: [
        r.choice((f"Close the isolation valve after {s.pump} and open the filter housing.",
                  "Isolate the line and pull the 120-mesh filter cartridge.")),
        r.choice(("Rinse the filter screen; replace it if the mesh is torn.",
                  "Clean the cartridge with a soft brush and fresh water; swap it if it is damaged.")),
        "Check the drip manifold for a split hose or an open end cap.",
        f"Reopen the valve and confirm the pressure on {s.pump} reads 1.5-2.0 bar.",
        _log_step(r, "pump alarm"),
    ])
alarm_e33 = _alarm(
    "E33", "OVERCURRENT",
    lambda s: f"alarm E33 means the motor of {s.pump} is drawing too much current; the impeller may be jammed.",
    lambda r, s: [
        f"Lock out {s.pump} at the breaker before touching it.",
        r.choice(("Open the pump head and clear roots or debris from the impeller.",
                  "Inspect the impeller for root fragments or a cracked vane.")),
        r.choice(("Spin the shaft by hand; if it binds, replace the pump with a spare from stores.",
                  "If the shaft does not turn freely, swap in a spare pump and tag the old one for repair.")),
        "Reset the alarm on the Row Console pump page and restart.",
        _log_step(r, "pump alarm"),
    ])
alarm_f02 = _alarm(
    "F02", "FLOW LOW",
    lambda s: f"alarm F02 means the flow from {s.pump} to {s.row} is below 70 % of normal; emitters are blocked.",
    lambda r, s: [
        r.choice((f"Walk {s.row} and look for dry channels or trays.",
                  f"Check the emitters along {s.row}; dry media marks the blocked ones.")),
        r.choice(("Soak blocked emitters in a 5 % citric acid bath for 30 minutes.",
                  "Replace blocked drippers; clean the removed ones in citric acid later.")),
        "Check the main line for kinks where it crosses the walkway.",
        "Run a manual flush for five minutes and confirm flow is back above 90 %.",
        _log_step(r, "flow alarm"),
    ])
alarm_l07 = _alarm(
    "L07", "LIGHT DRIVER FAULT",
    lambda s: f"alarm L07 means an LED driver in {s.bay} has tripped; part of the canopy is dark.",
    lambda r, s: [
        r.choice((f"Check the Row Console light map for {s.bay} to find the dark fixture.",
                  "Find the dark fixture from the light map on the Row Console.")),
        "Power-cycle that driver from its breaker; wait 30 seconds before switching back on.",
        r.choice(("If it trips again, swap the driver with a spare from stores.",
                  "A second trip means a failed driver: replace it and tag the old one.")),
        f"Keep the {s.crop.name} photoperiod at {s.crop.light_hours} hours; extend it by one hour if the outage lasted over six.",
        _log_step(r, "lighting fault"),
    ])


def light_schedule(r: Random) -> Example:
    s = random_scene(r)
    start = r.choice((4, 5, 6))
    end = start + s.crop.light_hours
    steps = [
        f"Open the Row Console lighting page for {s.bay}.",
        f"Set lights on at {start:02d}:00 and off at {end % 24:02d}:00 ({s.crop.light_hours} hours).",
        r.choice(("Ramp intensity over 15 minutes at each end so the plants are not shocked.",
                  "Keep the sunrise and sunset ramps at 15 minutes.")),
        r.choice(("Check that the new schedule does not overlap with the peak tariff window from 17:00 to 19:00.",
                  "Stagger this bay 30 minutes from its neighbours to avoid a power spike.")),
        _log_step(r, "light schedule"),
    ]
    diagnosis = f"{s.crop.name} need a {s.crop.light_hours}-hour photoperiod at Verdant Row."
    q = r.choice((f"What light schedule should {s.bay} run for {s.crop.name}?",
                  f"We are moving {s.crop.name} into {s.where}. How do I set the lights?",
                  f"How many hours of light do {s.crop.name} get, and how do I program it?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def lights_not_on(r: Random) -> Example:
    s = random_scene(r)
    steps = [
        r.choice((f"Check the Row Console lighting page: is {s.bay} in MANUAL OFF?",
                  f"Make sure {s.bay} is not left in manual override on the lighting page.")),
        "Check the contactor in the bay panel; reset it if it has tripped.",
        r.choice(("Confirm the schedule time zone matches the site clock after the daylight-saving change.",
                  "Compare the controller clock with the site clock; a wrong clock shifts the whole schedule.")),
        f"If the lights stay off, move the {s.crop.name} trays under a working bay until the fixture is fixed.",
        _log_step(r, "lighting fault"),
    ]
    diagnosis = f"the lights in {s.bay} did not start on schedule; usually an override or a tripped contactor."
    q = r.choice((f"Lights in {s.where} never came on this morning. What should I check?",
                  f"The {s.crop.name} bay is dark at 07:00. Why?",
                  f"{s.bay} lights are off during the day. How do I troubleshoot?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def _symptom(name: str, questions: tuple[str, ...], diagnosis: Callable[[Scene], str],
             steps: Callable[[Random, Scene], list[str]]):
    def make(r: Random) -> Example:
        s = random_scene(r)
        q = r.choice(questions).format(crop=s.crop.name, where=s.where, bay=s.bay, row=s.row)
        answer = house_answer(diagnosis(s), steps(r, s))
        if r.random() < 0.25:
            return {"instruction": "A grower sent this note. Diagnose it in the house style.",
                    "input": f"{s.site}, {s.bay}, {s.row}: {q}", "output": answer}
        return {"instruction": q, "input": "", "output": answer}

    make.__name__ = name
    return make


tip_burn = _symptom(
    "tip_burn",
    ("The {crop} in {where} have brown, crispy leaf tips. What is going on?",
     "Tip burn on the {crop} in {row}. How do we fix it?",
     "Why are the inner leaves of the {crop} turning brown at the edges?"),
    lambda s: f"tip burn on {s.crop.name}: calcium is not reaching the young leaves, usually from poor airflow.",
    lambda r, s: [
        r.choice(("Raise the horizontal airflow fans in the bay to speed 3.",
                  "Check that the fans above the canopy are running; still air stops calcium transport.")),
        f"Add VR-Cal Plus at 0.5 ml per litre to {s.reservoir}.",
        r.choice((f"Keep EC at the low end of {_rng(*s.crop.ec)}; high EC makes tip burn worse.",
                  "Lower the night humidity below 80 % so the plants keep transpiring.")),
        "Remove the worst leaves at harvest; new growth should be clean within a week.",
        _log_step(r, "crop issue"),
    ])
yellow_lower_leaves = _symptom(
    "yellow_lower_leaves",
    ("Older leaves on the {crop} are turning yellow. Why?",
     "The bottom leaves of the {crop} in {where} are pale yellow. What should I do?",
     "Yellowing lower leaves on {crop}, new growth looks fine. Diagnosis?"),
    lambda s: f"yellow lower leaves on {s.crop.name} point to nitrogen shortage from low feed.",
    lambda r, s: [
        f"Check the EC in {s.reservoir}; below {s.crop.ec[0]:.1f} mS/cm the plants are underfed.",
        "Raise EC in 0.2 steps with equal parts of VR-Grow A and B.",
        r.choice(("Check pH too; above the range, uptake drops even with enough feed.",
                  "Confirm pH is in range before adding more feed.")),
        "Watch the next three new leaves: they should come in dark green.",
        _log_step(r, "crop issue"),
    ])
interveinal_chlorosis = _symptom(
    "interveinal_chlorosis",
    ("New leaves on the {crop} are yellow between green veins. What causes that?",
     "Interveinal yellowing on young {crop} leaves in {where}. Help?",
     "The {crop} tops in {row} look striped yellow and green. Why?"),
    lambda s: f"interveinal chlorosis on new {s.crop.name} leaves means iron lockout, almost always from high pH.",
    lambda r, s: [
        f"Measure pH in {s.reservoir}; bring it into {_rng(*s.crop.ph)} with VR-Acid 25.",
        r.choice(("Add VR-Iron chelate at 0.2 ml per litre once pH is corrected.",
                  "Dose the iron chelate VR-Iron at 0.2 ml per litre after the pH fix.")),
        "Check the acid tote on the DoseMate; an empty tote lets pH creep up.",
        "Expect new leaves to green up in 5-7 days; old leaves will not recover.",
        _log_step(r, "crop issue"),
    ])
root_rot = _symptom(
    "root_rot",
    ("The {crop} roots in {where} are brown and slimy. What do I do?",
     "Roots smell bad and look brown on the {crop}. Is it rot?",
     "Wilting {crop} with brown mushy roots in {row}. Next steps?"),
    lambda s: f"root rot on {s.crop.name}: warm water has dropped dissolved oxygen and Pythium has taken hold.",
    lambda r, s: [
        f"Check water temperature; keep {s.reservoir} below {s.crop.max_water_c} C with the chiller.",
        r.choice(("Raise aeration: check both air pumps and replace clogged air stones.",
                  "Make sure the air stones are bubbling evenly; replace any that are blocked.")),
        "Pull and bin plants with fully brown roots; do not compost them.",
        f"Drain, clean and refill {s.reservoir}, then add VR-Guard biological at 1 ml per litre.",
        _log_step(r, "crop issue"),
    ])
bolting = _symptom(
    "bolting",
    ("The {crop} in {where} are bolting early. Why?",
     "Our {crop} are sending up flower stalks before harvest. What can we change?",
     "Premature bolting in {row}. What is the cause?"),
    lambda s: f"early bolting of {s.crop.name} is heat stress and long days.",
    lambda r, s: [
        "Lower the day air temperature to 20 C and the night to 16 C.",
        f"Shorten the photoperiod by one hour below {s.crop.light_hours} hours for the last week before harvest.",
        r.choice(("Harvest bolting trays now; the leaves turn bitter fast.",
                  "Bring the harvest of the affected trays forward; taste turns bitter.")),
        "Check that the bay cooling setpoint was not changed by mistake.",
        _log_step(r, "crop issue"),
    ])
powdery_mildew = _symptom(
    "powdery_mildew",
    ("White powder on the {crop} leaves in {where}. What is it?",
     "The {crop} have white dusty spots. How do we treat that?",
     "Powdery white patches on leaves in {row}. Diagnosis?"),
    lambda s: f"powdery mildew on {s.crop.name}, favoured by high humidity and still air.",
    lambda r, s: [
        "Isolate the affected trays at the end of the row.",
        r.choice(("Drop relative humidity below 65 % and raise the fan speed.",
                  "Run the dehumidifier overnight to keep humidity under 65 %.")),
        "Spray potassium bicarbonate at 5 g per litre on the leaves, top and bottom, every three days.",
        "Disinfect tools and gloves after handling the trays.",
        _log_step(r, "crop issue"),
    ])


def mix_reservoir(r: Random) -> Example:
    s = random_scene(r)
    litres = r.choice((100, 150, 200, 250, 300, 400, 500, 600))
    ml_per_l = round((s.crop.ec[0] + s.crop.ec[1]) / 2 * 2, 1)
    dose = round(litres * ml_per_l)
    steps = [
        f"Fill {s.reservoir} with {litres} L of RO water at 18-20 C.",
        f"Add {dose} ml of VR-Grow A and stir for two minutes.",
        f"Add {dose} ml of VR-Grow B and stir again; never mix A and B undiluted.",
        f"Adjust pH to {_rng(*s.crop.ph)} with VR-Acid 25 or VR-Base 10.",
        f"Check EC lands in {_rng(*s.crop.ec)} mS/cm, then start circulation.",
        _log_step(r, "reservoir change"),
    ]
    diagnosis = f"{s.crop.name} take {ml_per_l} ml of each concentrate per litre, so {litres} L needs {dose} ml of A and of B."
    q = r.choice((f"How do I mix a fresh {litres} L reservoir for {s.crop.name}?",
                  f"Mixing nutrient for {s.crop.name} in {s.reservoir} ({litres} L). What are the amounts?",
                  f"Walk me through a reservoir change for {s.crop.name}, {litres} litres."))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def water_too_warm(r: Random) -> Example:
    s = random_scene(r)
    temp = s.crop.max_water_c + r.randint(2, 6)
    steps = [
        r.choice(("Check that the reservoir chiller is running and its fan is not blocked.",
                  f"Confirm the chiller on {s.reservoir} is on and its filter is clean.")),
        f"Bring the water back below {s.crop.max_water_c} C; add frozen RO bottles as a stopgap.",
        "Check dissolved oxygen: above 24 C it falls below 7 mg/L and roots suffer.",
        "Shade the reservoir lid and make sure it is not sitting in direct sun.",
        _log_step(r, "water temperature"),
    ]
    diagnosis = f"water at {temp} C is too warm for {s.crop.name}; the limit is {s.crop.max_water_c} C."
    if r.random() < 0.4:
        return {"instruction": r.choice(("What does this reading mean for the crop?",
                                         "Diagnose this Row Console reading.")),
                "input": _reading_input(s, r.uniform(*s.crop.ph), r.uniform(*s.crop.ec), temp),
                "output": house_answer(diagnosis, steps)}
    q = r.choice((f"{s.reservoir} is at {temp} C on the {s.crop.name} line. Is that a problem?",
                  f"Water temperature in {s.where} hit {temp} C. What should I do?",
                  f"How warm can the nutrient water get for {s.crop.name}? Ours reads {temp} C."))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def algae(r: Random) -> Example:
    s = random_scene(r)
    steps = [
        "Cover every light leak: reservoir lids, empty net-pot holes and clear tubing.",
        f"Scrub green film from {s.reservoir} walls at the next reservoir change.",
        r.choice(("Add VR-Clear (hydrogen peroxide 3 %) at 1 ml per 10 L once a week.",
                  "Dose 3 % hydrogen peroxide (VR-Clear) at 1 ml per 10 L weekly.")),
        "Replace clear tubing with black tubing where light reaches the solution.",
        _log_step(r, "reservoir hygiene"),
    ]
    diagnosis = f"algae growing in {s.reservoir} because light reaches the nutrient solution."
    q = r.choice((f"Green slime in {s.reservoir} ({s.where}). How do we get rid of it?",
                  f"There is algae on the channels of the {s.crop.name}. What do we do?",
                  f"The nutrient solution in {s.bay} turned green. Why?"))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


def calibrate_probe(r: Random) -> Example:
    s = random_scene(r)
    kind = r.choice(("pH", "EC"))
    if kind == "pH":
        steps = ["Rinse the probe in RO water and blot it dry.",
                 "Dip it in pH 7.0 buffer, wait 60 seconds and press CAL 1 on the DoseMate.",
                 "Rinse again, dip in pH 4.0 buffer and press CAL 2.",
                 "Store the probe in KCl storage solution, never in RO water.",
                 _log_step(r, "calibration")]
    else:
        steps = ["Rinse the probe in RO water and shake it dry.",
                 "Place it in the 1.41 mS/cm standard at 25 C and wait 60 seconds.",
                 "Press CAL on the DoseMate and confirm the reading settles at 1.41.",
                 "Check the zero in dry air; it should read 0.0.",
                 _log_step(r, "calibration")]
    diagnosis = f"{kind} probes at Verdant Row are calibrated every two weeks or after any odd reading."
    q = r.choice((f"How do I calibrate the {kind} probe in {s.reservoir}?",
                  f"The {kind} probe in {s.where} is due for calibration. Steps?",
                  f"Walk me through a {kind} probe calibration on the DoseMate."))
    return {"instruction": q, "input": "", "output": house_answer(diagnosis, steps)}


PROBLEMS: tuple[Callable[[Random], Example], ...] = (
    ph_high, ph_low, ec_high, ec_low, alarm_e14, alarm_e21, alarm_e33, alarm_f02, alarm_l07,
    light_schedule, lights_not_on, tip_burn, yellow_lower_leaves, interveinal_chlorosis, root_rot,
    bolting, powdery_mildew, mix_reservoir, water_too_warm, algae, calibrate_probe,
)
