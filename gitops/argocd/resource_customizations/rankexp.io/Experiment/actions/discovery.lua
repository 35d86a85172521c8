-- The promote action is offered while a run waits for approval: the analysis proposed
-- a winner (status.analysis.winner) and spec.promotion.auto is false.
local actions = {}
local awaiting = false
if obj.status ~= nil and obj.status.phase == "Running" and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Concluded" and c.reason == "AwaitingApproval" then
      awaiting = true
    end
  end
end
local winner = nil
if obj.status ~= nil and obj.status.analysis ~= nil then
  winner = obj.status.analysis.winner
end
actions["promote"] = {["disabled"] = not (awaiting and winner ~= nil)}
return actions
