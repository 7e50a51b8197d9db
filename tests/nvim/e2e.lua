-- Headless Neovim (0.7+) end-to-end check of the pathfusion language server.
--
--   nvim --headless --clean -n -i NONE -u NONE -c "luafile tests/nvim/e2e.lua"
--
-- Inputs (environment):
--   PATHFUSION_E2E_CMD       JSON list: the server command
--   PATHFUSION_E2E_ROOT      workspace folder
--   PATHFUSION_E2E_FILE      the file to open (in the workspace)
--   PATHFUSION_E2E_OUT       where to write the JSON result
--   PATHFUSION_E2E_MODELS    initializationOptions.modelsDir
--   PATHFUSION_E2E_LINE, PATHFUSION_E2E_CHARACTER   0-based position of a function's name
--   PATHFUSION_E2E_QUERIES   JSON list of pathfusion.search queries
--   PATHFUSION_E2E_TIMEOUT_MS  overall deadline (default 150000)
-- Output: {"hover": markdown, "action": {...}, "edited_uris": [...], "searches": {query: results},
-- "status": {...}}, or {"error": message} and exit status 1.  Every wait has a timeout: the
-- script always exits (a watchdog hard-exits with status 3 at the deadline).

local uv = vim.loop
local out_path = os.getenv("PATHFUSION_E2E_OUT") or "pathfusion-e2e.json"
local deadline_ms = tonumber(os.getenv("PATHFUSION_E2E_TIMEOUT_MS") or "") or 150000
local REQUEST_MS = 60000

local function write_json(value)
  local fh = assert(io.open(out_path, "w"))
  fh:write(vim.fn.json_encode(value))
  fh:close()
end

local function write_error(message)
  -- plain string building: usable from a luv callback (fast context)
  local fh = io.open(out_path, "w")
  if fh then
    local escaped = tostring(message):gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end)
    fh:write('{"error": "' .. escaped .. '"}')
    fh:close()
  end
end

local watchdog = uv.new_timer()
watchdog:start(deadline_ms, 0, function()
  write_error("nvim e2e: overall deadline of " .. deadline_ms .. " ms passed")
  os.exit(3)
end)

local function env(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error("missing environment variable " .. name)
  end
  return value
end

local function wait_for(what, ms, check)
  local ok = vim.wait(ms, check, 50)
  if not ok then
    error("timed out after " .. ms .. " ms waiting for " .. what)
  end
end

local function request(client, method, params, bufnr)
  local response, err = client.request_sync(method, params, REQUEST_MS, bufnr)
  if response == nil then
    error(method .. " failed: " .. tostring(err))
  end
  if response.err ~= nil then
    error(method .. " answered an error: " .. vim.inspect(response.err))
  end
  return response.result
end

local function command(client, name, arguments, bufnr)
  return request(client, "workspace/executeCommand", { command = name, arguments = arguments }, bufnr)
end

local function main()
  local cmd = vim.fn.json_decode(env("PATHFUSION_E2E_CMD"))
  local root = env("PATHFUSION_E2E_ROOT")
  local file = env("PATHFUSION_E2E_FILE")
  local position = { line = tonumber(env("PATHFUSION_E2E_LINE")),
                     character = tonumber(env("PATHFUSION_E2E_CHARACTER")) }
  local queries = vim.fn.json_decode(env("PATHFUSION_E2E_QUERIES"))

  local initialized = false
  local client_id = vim.lsp.start_client({
    name = "pathfusion",
    cmd = cmd,
    root_dir = root,
    init_options = { modelsDir = env("PATHFUSION_E2E_MODELS"), hoverMinConfidence = 1.0, device = "cpu" },
    on_init = function() initialized = true end,
  })
  if client_id == nil then
    error("vim.lsp.start_client failed")
  end
  vim.cmd("edit " .. vim.fn.fnameescape(file))
  local bufnr = vim.api.nvim_get_current_buf()
  vim.bo[bufnr].filetype = "python"
  if not vim.lsp.buf_attach_client(bufnr, client_id) then
    error("vim.lsp.buf_attach_client failed")
  end
  wait_for("the server to initialize", 60000, function() return initialized end)
  local client = vim.lsp.get_client_by_id(client_id)
  if client == nil or client.is_stopped() then
    error("the server exited during initialization")
  end
  local uri = vim.uri_from_bufnr(bufnr)
  local result = { offset_encoding = client.offset_encoding }

  -- 1. the workspace index, then pathfusion.search (before the rename touches the files)
  local status
  wait_for("the workspace index", 90000, function()
    status = command(client, "pathfusion.status", nil, bufnr)
    local folders = (status.index or {}).folders or {}
    if #folders == 0 then
      return false
    end
    for _, folder in ipairs(folders) do
      if folder.state == "off" or folder.state == "error" or folder.state == "cancelled" then
        error("the index of " .. tostring(folder.root) .. " is " .. folder.state .. ": "
              .. tostring(folder.error))
      end
      if folder.state ~= "ready" then
        return false
      end
    end
    return true
  end)
  result.status = status
  result.searches = {}
  for _, query in ipairs(queries) do
    result.searches[query] = command(client, "pathfusion.search", { { query = query, k = 3 } }, bufnr)
  end

  -- 2. hover on the function's name
  local hover = request(client, "textDocument/hover",
                        { textDocument = { uri = uri }, position = position }, bufnr)
  if hover == nil or hover.contents == nil then
    error("no hover at " .. vim.inspect(position))
  end
  result.hover = hover.contents.value or hover.contents

  -- 3. a rename code action, resolved and applied by Neovim, then :wa
  local actions = request(client, "textDocument/codeAction", {
    textDocument = { uri = uri },
    range = { start = position, ["end"] = position },
    context = { diagnostics = {} },
  }, bufnr) or {}
  local action
  for _, candidate in ipairs(actions) do
    if type(candidate.title) == "string" and candidate.title:match("^Rename `") then
      action = candidate
      break
    end
  end
  if action == nil then
    error("no rename code action among " .. vim.inspect(actions))
  end
  local resolved = request(client, "codeAction/resolve", action, bufnr)
  if resolved.disabled ~= nil then
    error("the code action is disabled: " .. vim.inspect(resolved.disabled))
  end
  if resolved.edit == nil then
    error("the resolved code action has no edit")
  end
  vim.lsp.util.apply_workspace_edit(resolved.edit, client.offset_encoding)
  vim.cmd("silent wall")
  result.action = { title = resolved.title, new_name = (resolved.data or {}).new_name }
  result.edited_uris = {}
  for _, change in ipairs(resolved.edit.documentChanges or {}) do
    table.insert(result.edited_uris, change.textDocument.uri)
  end
  for changed_uri, _ in pairs(resolved.edit.changes or {}) do
    table.insert(result.edited_uris, changed_uri)
  end
  result.modified_buffers = vim.fn.getbufinfo({ bufmodified = 1 })
  if #result.modified_buffers > 0 then
    error("buffers left unsaved after :wall")
  end
  result.modified_buffers = nil

  client.stop()
  vim.wait(5000, function() return client.is_stopped() end, 50)
  return result
end

local ok, value = xpcall(main, debug.traceback)
watchdog:stop()
if ok then
  local written, err = pcall(write_json, value)
  if written then
    vim.cmd("qall!")
  else
    write_error("cannot write the result: " .. tostring(err))
  end
else
  write_error(value)
end
vim.cmd("cquit 1")
