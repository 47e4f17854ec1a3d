using QLoraNet.Cli;

return CliApp.Run(args);
