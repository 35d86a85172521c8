-- Argo CD health of a rankexp.io Experiment, from the status the operator writes.
--   Pending, Running          -> Progressing (the run still moves traffic or decides)
--   AwaitingApproval, paused  -> Suspended   (a person's turn: the promote action, spec.paused)
--   RolledBack, Failed        -> Degraded    (the change did not take, or cannot be served)
--   Promoted, Inconclusive    -> Healthy     (the run ended; the winner or control serves)
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata.deletionTimestamp ~= nil then
  -- what Argo CD itself says of any resource being deleted
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  return hs
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the Experiment"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end

local phase = status.phase
local degraded = condition(status, "Degraded")
local concluded = condition(status, "Concluded")
local progressing = condition(status, "Progressing")

if phase == "Failed" or (degraded ~= nil and degraded.status == "True") then
  hs.status = "Degraded"
  hs.message = message(degraded, "The spec cannot be served")
  return hs
end
if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "Rolled back: " .. message(concluded, "control serves 100 %")
  return hs
end
if phase == "Promoted" then
  hs.status = "Healthy"
  hs.message = "Promoted " .. (status.winner or "") .. ": " .. message(concluded, "")
  return hs
end
if phase == "Inconclusive" then
  hs.status = "Healthy"
  hs.message = "Inconclusive, control kept: " .. message(concluded, "")
  return hs
end
if progressing ~= nil and progressing.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = "Paused: spec.paused is true"
  return hs
end
if phase == "Running" and concluded ~= nil and concluded.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = concluded.message
  return hs
end
if phase == "Running" then
  hs.status = "Progressing"
  hs.message = message(concluded, "The analysis is running")
  return hs
end
hs.status = "Progressing"
hs.message = message(progressing, "Waiting for the variants to become ready")
return hs
