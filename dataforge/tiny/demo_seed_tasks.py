"""Self-Instruct seed tasks for the Verdant Row domain, hand-written for this project.

Format of the Self-Instruct paper's `seed_tasks.jsonl`: `id`, `name`, `instruction`,
`instances: [{input, output}]`, `is_classification`. A few are classification tasks, because the
Self-Instruct recipe generates those output-first and the demo should exercise both paths.
"""

from __future__ import annotations

from dataforge.tiny.demo_domain import house_answer

_TASKS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("ph_triage", "Diagnose a reservoir pH reading for the grower.",
     "Crop: butterhead lettuce | pH 6.9 | EC 1.0 mS/cm",
     house_answer("pH 6.9 is above the 5.8-6.2 range for butterhead lettuce; iron locks out.",
                  ["Check the probe against the pH 7.0 buffer.",
                   "Dose VR-Acid 25 at 5 ml per 100 L and circulate 15 minutes.",
                   "Log the correction in Row Console."]), False),
    ("ec_triage", "Explain what an EC reading means for the crop and what to change.",
     "Crop: curly kale | EC 2.6 mS/cm",
     house_answer("EC 2.6 mS/cm is above 1.4-1.8 for curly kale; the roots are under salt stress.",
                  ["Confirm with the handheld EC meter.",
                   "Dilute with RO water until EC is back in range.",
                   "Log the correction in Row Console."]), False),
    ("alarm_meaning", "Explain a Verdant Row pump alarm code to a new technician.", "E21",
     house_answer("E21 means low line pressure after the pump, usually a clogged filter.",
                  ["Isolate the line and pull the filter cartridge.",
                   "Rinse or replace the screen.",
                   "Reopen the valve and confirm 1.5-2.0 bar."]), False),
    ("alarm_severity", "Classify the alarm as critical, warning or info.", "E14 DRY RUN on P-102",
     "critical", True),
    ("symptom_category", "Classify the grower's symptom as nutrient, water, light or pest.",
     "White dusty spots on basil leaves.", "pest", True),
    ("ticket_routing", "Route the ticket to the right team: growing, maintenance or it.",
     "The Row Console login page times out at Quill Creek.", "it", True),
    ("reading_in_range", "Say whether the reading is in range for the crop: yes or no.",
     "Crop: strawberries | pH 5.8", "yes", True),
    ("mix_amounts", "Give the nutrient amounts for a fresh reservoir.", "Crop: Genovese basil | 200 L",
     house_answer("Genovese basil take 2.8 ml of each concentrate per litre, so 200 L needs 560 ml of A and of B.",
                  ["Fill with 200 L of RO water.", "Add 560 ml of VR-Grow A and stir.",
                   "Add 560 ml of VR-Grow B and stir.", "Adjust pH to 5.8-6.4."]), False),
    ("light_plan", "Write the light schedule for a crop.", "Crop: strawberries | lights on 06:00",
     house_answer("strawberries need a 12-hour photoperiod at Verdant Row.",
                  ["Set lights on at 06:00 and off at 18:00.", "Keep the 15-minute ramps.",
                   "Log the schedule in Row Console."]), False),
    ("handover_note", "Write a short shift handover note from the readings.",
     "Bay 4: pH 6.0, EC 1.3, water 21 C; Bay 5: pump P-201 alarm E33 cleared at 03:10",
     "Bay 4 is in range. Bay 5 had an E33 overcurrent on P-201, cleared at 03:10; watch its current "
     "draw on the next shift.", False),
    ("probe_calibration", "List the steps to calibrate a probe on the DoseMate.", "pH probe",
     house_answer("pH probes are calibrated every two weeks or after any odd reading.",
                  ["Rinse the probe in RO water.", "Calibrate in pH 7.0 buffer (CAL 1).",
                   "Calibrate in pH 4.0 buffer (CAL 2).", "Store it in KCl solution."]), False),
    ("root_check", "Diagnose a root problem from the grower's description.",
     "Brown, slimy roots on romaine; water at 26 C.",
     house_answer("root rot: warm water has dropped dissolved oxygen and Pythium has taken hold.",
                  ["Cool the reservoir below 22 C.", "Check the air stones.",
                   "Bin plants with fully brown roots.", "Clean the reservoir and add VR-Guard."]), False),
    ("leaf_symptom", "Explain what a leaf symptom means and how to fix it.",
     "Yellow between the veins on new kale leaves.",
     house_answer("interveinal chlorosis on new leaves means iron lockout from high pH.",
                  ["Bring pH into 6.0-6.5.", "Add VR-Iron chelate at 0.2 ml per litre.",
                   "Check the acid tote on the DoseMate."]), False),
    ("water_temp", "Say what to do about the nutrient water temperature.", "Spinach reservoir at 25 C",
     house_answer("water at 25 C is too warm for baby spinach; the limit is 20 C.",
                  ["Check the chiller.", "Add frozen RO bottles as a stopgap.",
                   "Shade the reservoir lid."]), False),
    ("algae_fix", "Explain how to stop algae in a reservoir.", "",
     house_answer("algae grows because light reaches the nutrient solution.",
                  ["Cover light leaks.", "Scrub the reservoir walls.",
                   "Dose VR-Clear at 1 ml per 10 L weekly."]), False),
    ("unit_convert", "Convert the EC reading in microsiemens to mS/cm.", "1450 uS/cm", "1.45 mS/cm", False),
    ("customer_reply", "Write a polite reply to a retail customer about a produce issue.",
     "Our basil wilted one day after delivery.",
     "Thank you for telling us. Basil dislikes cold: please keep it at room temperature in water like "
     "cut flowers. We are sending a replacement with your next delivery.", False),
    ("checklist", "Write the opening checklist for a bay.", "Bay 2, pea shoots",
     house_answer("every bay opens with a five-minute walk-through.",
                  ["Check lights are on schedule.", "Read pH, EC and water temperature.",
                   "Look for dry trays.", "Clear any alarms in Row Console."]), False),
    ("reading_outlier", "Find the reading that looks wrong and explain why.",
     "pH log: 6.0, 6.1, 6.0, 9.8, 6.1",
     "The 9.8 is an outlier: pH cannot jump 3.7 units and come back in one reading, so it is a probe "
     "glitch or a reading taken in the acid line. Recheck the probe.", False),
    ("bolting_advice", "Advise a grower whose lettuce is bolting.", "Romaine, day temperature 27 C",
     house_answer("early bolting of romaine is heat stress and long days.",
                  ["Lower day temperature to 20 C.", "Shorten the photoperiod by one hour.",
                   "Harvest the bolting trays now."]), False),
)


def seed_tasks() -> list[dict]:
    return [
        {"id": f"seed_task_{i}", "name": name, "instruction": instruction,
         "instances": [{"input": inp, "output": out}], "is_classification": is_cls}
        for i, (name, instruction, inp, out, is_cls) in enumerate(_TASKS)
    ]
