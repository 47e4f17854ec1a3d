namespace QLoraNet.Training;
