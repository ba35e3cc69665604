// The map's one palette (issue 18, legibility). Device kinds are told apart by fill colour,
// statuses by fill too (offline grey, stale khaki, a dark lamp brown), and alarms by a ring
// drawn around the device, never by recolouring it: severity is the ring's colour and its
// thickness, so a critical alarm on a lamp reads as a thick red ring round a yellow dot.
//
// The colours were chosen so that every severity stays distinct from the others and from
// every kind and status colour under deuteranopia, protanopia and tritanopia as well as
// normal vision: tests/web/test_palette.py simulates the three (Machado et al. 2009) and
// checks the CAM02-UCS distances. Keep the objects below plain JSON literals (quoted keys
// not needed, "#rrggbb" values): the test reads them from this file.

export const KIND_COLOURS = {
  streetlight: "#ffd166",
  lighting_cabinet: "#4033f8",
  water_meter: "#18b398",
  pressure_sensor: "#1c92bc",
  flow_meter: "#2f9d70",
  water_pipe: "#95e7f7",
  traffic_controller: "#b3d5a0",
  road_segment: "#32db58",
  env_sensor: "#8cfc50",
  camera: "#89a1cb",
  tree: "#8ee484",
  green_area: "#5bffa6",
};

export const STATUS_COLOURS = {
  online: "#7ee081",
  stale: "#a3b18a",
  offline: "#6c737d",
  unknown: "#495565",
  lamp_off: "#6c5f3c",
};

export const SEVERITY_COLOURS = {
  critical: "#ff1f5a",
  major: "#ff9500",
  minor: "#f5f5f5",
  warning: "#c084fc",
};

// Ring thickness (px) per severity: the order reads without colour too.
export const SEVERITY_RING = {
  critical: 4,
  major: 3,
  minor: 2,
  warning: 1.5,
};
