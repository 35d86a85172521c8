-- Argo CD health of a rankexp.io AlertPolicy, from the status the operator writes.
--   not evaluated yet, Prometheus unreachable (retried) -> Progressing
--   Degraded (a rule Prometheus rejects, a missing Secret, an invalid spec) -> Degraded
--   evaluated -> Healthy; firing alerts are the policy working, not a fault of it
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

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Pending deletion"
  return hs
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the first evaluation"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate generation " .. obj.metadata.generation
  return hs
end

local degraded = condition(status, "Degraded")
local ready = condition(status, "Ready")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message
  return hs
end
if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  else
    hs.message = "Waiting for the first evaluation"
  end
  return hs
end
local firing, pending = 0, 0
if status.alerts ~= nil then
  for _, alert in ipairs(status.alerts) do
    if alert.state == "firing" then
      firing = firing + 1
    elseif alert.state == "pending" then
      pending = pending + 1
    end
  end
end
hs.status = "Healthy"
hs.message = ready.message .. "; alerts: " .. firing .. " firing, " .. pending .. " pending"
return hs
