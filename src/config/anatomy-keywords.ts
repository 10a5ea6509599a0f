// Default keyword map for routing's last-resort anatomy guess: when an image has no usable Body Part
// Examined and no Anatomic Region Sequence, its Series Description, Protocol Name and Study Description
// are searched for these words (whole words, case- and accent-insensitive; '_', '-' and spaces alike).
// Admins override it per region in config (routing.anatomyKeywords); a region set to [] is switched off.
//
// Deliberately absent: bare projections ('PA', 'AP', 'LAT'), which name a view, not a region (a 'PA'
// hand or skull is not a chest), and words that also name other parts ('THORACIC' spine, German 'BRUST'
// for chest and breast, French 'MAIN' for hand).

export const DEFAULT_ANATOMY_KEYWORDS: Readonly<Record<string, readonly string[]>> = {
  CHEST: [
    'CHEST',
    'THORAX',
    'TORAX',
    'TORACE',
    'THORAKS',
    'BRUSTKORB',
    'POITRINE',
    'PECHO',
    'BORST',
    'LUNG',
    'LUNGS',
    'LUNGE',
    'LUNGEN',
    'POUMON',
    'POUMONS',
    'POLMONE',
    'POLMONI',
    'PULMON',
    'PULMONES',
    'CXR',
    'RX TORAX',
  ],
  HEAD: [
    'HEAD',
    'SKULL',
    'CRANIUM',
    'KOPF',
    'SCHADEL',
    'SCHAEDEL',
    'CRANE',
    'CRANEO',
    'CRANIO',
    'CABEZA',
    'TETE',
  ],
  BRAIN: ['BRAIN', 'CERVEAU', 'GEHIRN', 'CEREBRO', 'CERVELLO', 'ENCEPHALON'],
  ABDOMEN: ['ABDOMEN', 'ABDO', 'ABD', 'BAUCH', 'ADDOME', 'ABDOMINAL'],
  PELVIS: ['PELVIS', 'BECKEN', 'BASSIN', 'BACINO'],
  KNEE: ['KNEE', 'KNIE', 'GENOU', 'RODILLA', 'GINOCCHIO', 'JOELHO'],
  HAND: ['HAND', 'MANO'],
  FOOT: ['FOOT', 'FUSS', 'PIED'],
  SHOULDER: ['SHOULDER', 'SCHULTER', 'EPAULE', 'HOMBRO', 'SPALLA'],
  HIP: ['HIP', 'HUFTE', 'HUEFTE', 'HANCHE', 'CADERA', 'ANCA'],
  ANKLE: ['ANKLE', 'SPRUNGGELENK', 'CHEVILLE', 'TOBILLO', 'CAVIGLIA'],
  WRIST: ['WRIST', 'HANDGELENK', 'POIGNET', 'MUNECA', 'POLSO'],
  ELBOW: ['ELBOW', 'ELLBOGEN', 'ELLENBOGEN', 'COUDE', 'CODO', 'GOMITO'],
  CSPINE: ['CSPINE', 'C SPINE', 'CERVICAL SPINE', 'HWS'],
  TSPINE: ['TSPINE', 'T SPINE', 'THORACIC SPINE', 'BWS'],
  LSPINE: ['LSPINE', 'L SPINE', 'LUMBAR SPINE', 'LWS'],
  BREAST: ['BREAST', 'MAMMO', 'MAMMOGRAPHY', 'MAMMOGRAPHIE', 'MAMMA'],
};
